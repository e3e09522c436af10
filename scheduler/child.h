/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Internal to scheduler/: one child process (a hook or an application
 * command) with a clean environment, its own process group, captured
 * output and a time limit. Waited for with an sd-event child source, so the
 * caller's thread must have SIGCHLD blocked.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

/* Credentials to drop to before exec (user policy hooks). */
struct child_cred {
        uid_t uid;
        gid_t gid;
        const gid_t *groups; /* supplementary groups, from getgrouplist() */
        size_t n_groups;
};

struct child_spec {
        const char *step;              /* "hook 10-foo", "hello install": borrowed */
        int exec_fd;                   /* >= 0: execveat() this opened file; else argv[0] */
        char *const *argv;             /* NULL-terminated; borrowed */
        char *const *envp;             /* NULL-terminated; borrowed */
        const char *cwd;               /* chdir target; with cred, falls back to "/" */
        int policy_fd;                 /* >= 0: becomes fd 3 in the child */
        const struct child_cred *cred; /* NULL: keep the scheduler's credentials */
        uint64_t deadline_usec;        /* CLOCK_MONOTONIC, absolute */
        uint64_t grace_usec;           /* SIGTERM to SIGKILL */
        size_t output_cap;             /* bytes of stdout+stderr kept */
};

enum child_end {
        CHILD_EXITED,   /* status is the exit code */
        CHILD_SIGNALED, /* status is the signal */
};

struct child_result {
        enum child_end end;
        int status;
        bool timed_out;     /* the deadline passed and the group was signalled */
        bool terminated;    /* child_terminate() was called */
        const char *output; /* owned by the child object; not NUL-terminated */
        size_t output_len;
        uint64_t output_total; /* bytes the child wrote, including discarded ones */
};

struct child;

/* Called once, from the child source's handler, when the process has
 * exited. The child object is not freed by this; the owner frees it later
 * (not from inside this callback). */
typedef void (*child_done_fn)(struct child *c, void *userdata);

/* On success *ret is owned by the caller (child_free). */
int child_spawn(sd_event *event, const struct child_spec *spec, child_done_fn done, void *userdata,
                struct child **ret);

bool child_exited(const struct child *c);
const struct child_result *child_get_result(const struct child *c);
const char *child_get_step(const struct child *c);

/* SIGTERM to the process group now, SIGKILL after the grace. */
void child_terminate(struct child *c);

/* A child still running is killed (SIGKILL to the group) and reaped
 * synchronously. Accepts NULL, returns NULL. */
struct child *child_free(struct child *c);
