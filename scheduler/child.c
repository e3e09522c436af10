/* SPDX-License-Identifier: Apache-2.0 */
#include "scheduler/child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

struct child {
        sd_event *event;
        char *step;
        pid_t pid;
        int out_fd;
        sd_event_source *child_source;
        sd_event_source *io_source;
        sd_event_source *deadline_source;
        sd_event_source *kill_source;
        uint64_t grace_usec;
        size_t output_cap;
        char *output;
        struct child_result result;
        bool exited;
        child_done_fn done;
        void *userdata;
};

/* Fixed descriptor numbers in the child: 3 is the policy (documented for
 * hooks as TETHER_POLICY=/dev/fd/3 where the path is not reachable), 4 the
 * hook being executed. The hook's descriptor must survive exec: a script
 * started through execveat() is handed to its interpreter as /dev/fd/4. */
#define CHILD_POLICY_FD 3
#define CHILD_EXEC_FD 4
/* Above every fixed number, where sources are parked before dup2(). */
#define CHILD_PARK_FD 16

static void write_child_error(const char *what, int error) {
        /* Async-signal-safe report on the captured output: "tether: <what>
         * failed: errno N". The exit code 127 then says "could not start". */
        char buf[128];
        size_t n = 0;
        const char *prefix = "tether: ";
        for (const char *p = prefix; *p && n < sizeof(buf) - 1; p++)
                buf[n++] = *p;
        for (const char *p = what; *p && n < sizeof(buf) - 24; p++)
                buf[n++] = *p;
        const char *mid = " failed: errno ";
        for (const char *p = mid; *p && n < sizeof(buf) - 8; p++)
                buf[n++] = *p;
        char digits[8];
        size_t nd = 0;
        unsigned v = error < 0 ? (unsigned)-error : (unsigned)error;
        do {
                digits[nd++] = (char)('0' + v % 10);
                v /= 10;
        } while (v && nd < sizeof(digits));
        while (nd > 0 && n < sizeof(buf) - 1)
                buf[n++] = digits[--nd];
        buf[n++] = '\n';
        (void)!write(STDERR_FILENO, buf, n);
}

static int park_fd(int fd) {
        if (fd < 0)
                return -1;
        return fcntl(fd, F_DUPFD_CLOEXEC, CHILD_PARK_FD);
}

/* Runs in the forked child: only system calls from here on (the parent is
 * single-threaded, but we keep to async-signal-safe calls regardless). */
/* In the child: become the user, each step checked; a hook never runs with
 * root left over. setgroups + setgid + setuid: initgroups() is done in the
 * parent (getgrouplist), because NSS is not fork-safe. */
static void child_drop_to(const struct child_cred *cred) {
        if (setgroups(cred->n_groups, cred->groups) < 0) {
                write_child_error("setgroups", errno);
                _exit(127);
        }
        if (setgid(cred->gid) < 0) {
                write_child_error("setgid", errno);
                _exit(127);
        }
        if (setuid(cred->uid) < 0) {
                write_child_error("setuid", errno);
                _exit(127);
        }
        if (getuid() != cred->uid || geteuid() != cred->uid || getgid() != cred->gid ||
            getegid() != cred->gid) {
                write_child_error("credential check", EPERM);
                _exit(127);
        }
        if (cred->uid != 0 && setuid(0) == 0) {
                write_child_error("privilege drop check", EPERM);
                _exit(127);
        }
}

static _Noreturn void child_exec(const struct child_spec *spec, int null_fd, int out_wr) {
        sigset_t all;
        int exec_fd, policy_fd;

        (void)setpgid(0, 0);

        /* The scheduler blocks SIGCHLD and may ignore SIGPIPE: neither may
         * leak into the hook. */
        for (int sig = 1; sig < _NSIG; sig++) {
                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                (void)signal(sig, SIG_DFL);
        }
        sigemptyset(&all);
        (void)sigprocmask(SIG_SETMASK, &all, NULL);

        null_fd = park_fd(null_fd);
        out_wr = park_fd(out_wr);
        exec_fd = park_fd(spec->exec_fd);
        policy_fd = park_fd(spec->policy_fd);
        if (null_fd < 0 || out_wr < 0 || (spec->exec_fd >= 0 && exec_fd < 0) ||
            (spec->policy_fd >= 0 && policy_fd < 0))
                _exit(127);

        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_wr, STDOUT_FILENO) < 0 ||
            dup2(out_wr, STDERR_FILENO) < 0)
                _exit(127);
        if (policy_fd >= 0 && dup2(policy_fd, CHILD_POLICY_FD) < 0) {
                write_child_error("dup2 policy", errno);
                _exit(127);
        }
        if (exec_fd >= 0 && dup2(exec_fd, CHILD_EXEC_FD) < 0) {
                write_child_error("dup2 hook", errno);
                _exit(127);
        }
        /* Everything above the fixed numbers goes, parked copies included. */
        if (syscall(SYS_close_range, (unsigned)CHILD_EXEC_FD + 1, ~0U, 0) < 0) {
                for (int fd = CHILD_EXEC_FD + 1; fd < 1024; fd++)
                        (void)close(fd);
        }
        if (policy_fd < 0)
                (void)close(CHILD_POLICY_FD);
        if (exec_fd < 0)
                (void)close(CHILD_EXEC_FD);

        if (spec->cred)
                child_drop_to(spec->cred);

        if (!spec->cwd || chdir(spec->cwd) < 0) {
                if (!spec->cred || chdir("/") < 0) {
                        write_child_error("chdir", errno);
                        _exit(127);
                }
        }
        umask(022);

        if (exec_fd >= 0)
                syscall(SYS_execveat, CHILD_EXEC_FD, "", spec->argv, spec->envp, AT_EMPTY_PATH);
        else
                execve(spec->argv[0], spec->argv, spec->envp);
        write_child_error("exec", errno);
        _exit(127);
}

static void child_signal_group(struct child *c, int sig) {
        /* The leader is not reaped before our handler returns (sd-event
         * reaps after the callback), so its pid still names this group. */
        if (c->pid > 0)
                (void)kill(-c->pid, sig);
}

static void child_read_available(struct child *c) {
        char buf[16384];

        for (;;) {
                ssize_t n = read(c->out_fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        /* EOF or EAGAIN (or an error, which we treat as
                         * EOF): stop watching once it is EOF. */
                        if (n == 0 || errno != EAGAIN) {
                                c->io_source = sd_event_source_disable_unref(c->io_source);
                                close(c->out_fd);
                                c->out_fd = -1;
                        }
                        return;
                }
                c->result.output_total += (uint64_t)n;
                size_t keep = 0;
                if (c->result.output_len < c->output_cap)
                        keep = c->output_cap - c->result.output_len;
                if (keep > (size_t)n)
                        keep = (size_t)n;
                if (keep > 0) {
                        memcpy(c->output + c->result.output_len, buf, keep);
                        c->result.output_len += keep;
                }
                /* Beyond the cap the bytes are read and dropped, so the
                 * child never blocks on a full pipe. */
        }
}

static int on_output(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct child *c = userdata;

        child_read_available(c);
        return 0;
}

static int on_kill_time(sd_event_source *source, uint64_t usec, void *userdata) {
        struct child *c = userdata;

        child_signal_group(c, SIGKILL);
        return 0;
}

static void child_arm_kill(struct child *c) {
        uint64_t now;

        if (c->kill_source)
                return;
        if (sd_event_now(c->event, CLOCK_MONOTONIC, &now) < 0)
                now = 0;
        if (sd_event_add_time(c->event, &c->kill_source, CLOCK_MONOTONIC, now + c->grace_usec, 0,
                              on_kill_time, c) < 0) {
                /* No timer: no grace either. */
                child_signal_group(c, SIGKILL);
        }
}

static int on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        struct child *c = userdata;

        c->result.timed_out = true;
        child_signal_group(c, SIGTERM);
        child_arm_kill(c);
        return 0;
}

static int on_child_exit(sd_event_source *source, const siginfo_t *si, void *userdata) {
        struct child *c = userdata;

        if (si->si_code == CLD_EXITED) {
                c->result.end = CHILD_EXITED;
                c->result.status = si->si_status;
        } else {
                c->result.end = CHILD_SIGNALED;
                c->result.status = si->si_status;
        }
        /* Whatever the group left behind goes with the leader: a hook may
         * not leave processes running after it is done. */
        child_signal_group(c, SIGKILL);
        c->exited = true;
        c->deadline_source = sd_event_source_disable_unref(c->deadline_source);
        c->kill_source = sd_event_source_disable_unref(c->kill_source);
        /* What the leader wrote is in the pipe already; a straggler that
         * escaped the group could hold the pipe open, so do not wait for
         * EOF. */
        if (c->out_fd >= 0)
                child_read_available(c);
        c->io_source = sd_event_source_disable_unref(c->io_source);
        if (c->out_fd >= 0) {
                close(c->out_fd);
                c->out_fd = -1;
        }
        c->result.output = c->output;
        log_debug("%s: exited (%s %d), %llu bytes of output", c->step,
                  c->result.end == CHILD_EXITED ? "status" : "signal", c->result.status,
                  (unsigned long long)c->result.output_total);
        if (c->done)
                c->done(c, c->userdata);
        return 0;
}

/* The child's record, before the fork; NULL when out of memory. */
static struct child *child_alloc(sd_event *event, const struct child_spec *spec, child_done_fn done,
                                 void *userdata) {
        struct child *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->event = sd_event_ref(event);
        c->out_fd = -1;
        c->grace_usec = spec->grace_usec;
        c->output_cap = spec->output_cap;
        c->done = done;
        c->userdata = userdata;
        c->step = strdup(spec->step ? spec->step : "child");
        c->output = malloc(spec->output_cap > 0 ? spec->output_cap : 1);
        if (!c->step || !c->output)
                return child_free(c);
        c->result.output = c->output;
        return c;
}

int child_spawn(sd_event *event, const struct child_spec *spec, child_done_fn done, void *userdata,
                struct child **ret) {
        _cleanup_(closep) int null_fd = -1;
        int pipefd[2] = {-1, -1};
        struct child *c;
        sigset_t mask;
        int r;

        if (!event || !spec || !spec->argv || !spec->argv[0] || !spec->envp || !ret)
                return -EINVAL;
        /* sd_event_add_child() needs SIGCHLD blocked; say so before forking. */
        if (sigprocmask(SIG_SETMASK, NULL, &mask) < 0)
                return -errno;
        if (!sigismember(&mask, SIGCHLD))
                return -EBUSY;

        c = child_alloc(event, spec, done, userdata);
        if (!c)
                return -ENOMEM;

        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0) {
                r = -errno;
                goto fail;
        }
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
        }
        c->out_fd = pipefd[0];
        if (fcntl(c->out_fd, F_SETFL, O_NONBLOCK) < 0) {
                r = -errno;
                goto fail;
        }

        c->pid = fork();
        if (c->pid < 0) {
                r = -errno;
                goto fail;
        }
        if (c->pid == 0)
                child_exec(spec, null_fd, pipefd[1]);

        /* Both sides set the group, so a signal sent right after fork()
         * already reaches it. */
        (void)setpgid(c->pid, c->pid);
        close(pipefd[1]);
        pipefd[1] = -1;

        r = sd_event_add_child(event, &c->child_source, c->pid, WEXITED, on_child_exit, c);
        if (r < 0)
                goto fail;
        r = sd_event_add_io(event, &c->io_source, c->out_fd, EPOLLIN, on_output, c);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(event, &c->deadline_source, CLOCK_MONOTONIC, spec->deadline_usec, 0,
                              on_deadline, c);
        if (r < 0)
                goto fail;

        log_debug("%s: started as pid %d", c->step, (int)c->pid);
        *ret = c;
        return 0;

fail:
        if (pipefd[1] >= 0)
                close(pipefd[1]);
        if (pipefd[0] >= 0 && c->out_fd != pipefd[0])
                close(pipefd[0]);
        child_free(c);
        return r;
}

bool child_exited(const struct child *c) {
        return c->exited;
}

const struct child_result *child_get_result(const struct child *c) {
        return &c->result;
}

const char *child_get_step(const struct child *c) {
        return c->step;
}

void child_terminate(struct child *c) {
        if (!c || c->exited)
                return;
        c->result.terminated = true;
        child_signal_group(c, SIGTERM);
        child_arm_kill(c);
}

struct child *child_free(struct child *c) {
        if (!c)
                return NULL;
        c->child_source = sd_event_source_disable_unref(c->child_source);
        if (c->pid > 0 && !c->exited) {
                /* Nobody will wait for it on the loop any more: kill the
                 * group and reap the leader here. SIGKILL cannot be caught,
                 * so this does not block for long. */
                child_signal_group(c, SIGKILL);
                while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        c->io_source = sd_event_source_disable_unref(c->io_source);
        c->deadline_source = sd_event_source_disable_unref(c->deadline_source);
        c->kill_source = sd_event_source_disable_unref(c->kill_source);
        if (c->out_fd >= 0)
                close(c->out_fd);
        sd_event_unref(c->event);
        free(c->output);
        free(c->step);
        free(c);
        return NULL;
}
