/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scheduler/ unit tests: real child processes running hooks and commands
 * that the tests write into temporary directories, on a real sd-event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "scheduler/policy.h"
#include "scheduler/scheduler.h"
#include "transport/sign.h"

#define USEC_PER_SEC 1000000ULL
#define USEC_PER_MSEC 1000ULL

struct result {
        enum tether_task_type cycle;
        char *guid;
        uint32_t rc;
        char *detail;
};

struct answer {
        enum tether_policy_result result;
        char *body;
        uint8_t *sig;
        size_t sig_len;
        int error;
};

struct fx {
        char root[64];
        char state[128];
        char cycles[128];
        char marks[128];
        sd_event *event;
        struct tether_key *key;
        struct tether_scheduler *s;
        struct tether_scheduler_options opt;

        struct result results[64];
        size_t n_results;

        struct answer machine;
        struct answer user;
        unsigned policy_requests;
        char last_user[64];

        uid_t uids[8];
        int n_uids;

        bool no_answer; /* leave policy requests unanswered */
        char last_output[512];
        size_t last_output_len;
        uint64_t last_output_total;
        unsigned outputs;
};

/* ---- helpers ---------------------------------------------------------- */

static void write_file(const char *path, const char *content, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        size_t len = strlen(content);
        assert_int_equal(write(fd, content, len), (ssize_t)len);
        assert_int_equal(fchmod(fd, mode), 0);
        close(fd);
}

static char *read_text(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf;
        size_t n;

        if (!f)
                return NULL;
        buf = calloc(1, 1 << 20);
        assert_non_null(buf);
        n = fread(buf, 1, (1 << 20) - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static int count_lines(const char *path) {
        _cleanup_(freep) char *t = read_text(path);
        int n = 0;

        if (!t)
                return 0;
        for (char *p = t; *p; p++)
                if (*p == '\n')
                        n++;
        return n;
}

static void hook(struct fx *f, const char *cycle, const char *name, const char *body, mode_t mode) {
        char dir[PATH_MAX + 32], path[PATH_MAX * 2];
        _cleanup_(freep) char *script = NULL;

        snprintf(dir, sizeof(dir), "%s/%s", f->cycles, cycle);
        (void)mkdir(dir, 0755);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        assert_true(asprintf(&script, "#!/bin/sh\nM='%s'\n%s\n", f->marks, body) > 0);
        write_file(path, script, mode);
}

static char *make_policy(const char *user, const char *id, const char *timestamp, const char *extra) {
        char *p;
        assert_true(asprintf(&p,
                             "<Policy Version=\"1\" Scope=\"%s\"%s%s%s TimeStamp=\"%s\" "
                             "PolicyID=\"%s\">%s</Policy>",
                             user ? "user" : "machine", user ? " User=\"" : "", user ? user : "",
                             user ? "\"" : "", timestamp, id, extra ? extra : "") > 0);
        return p;
}

static void answer_set(struct fx *f, struct answer *a, enum tether_policy_result result, char *body) {
        free(a->body);
        free(a->sig);
        *a = (struct answer){.result = result, .body = body};
        if (body)
                assert_int_equal(tether_sign(f->key, TETHER_SIG_TYPE_POLICY, (const uint8_t *)body,
                                             strlen(body), &a->sig, &a->sig_len),
                                 0);
}

static void on_done(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
                    uint32_t return_code, const char *detail, void *userdata) {
        struct fx *f = userdata;

        assert_true(f->n_results < ELEMENTSOF(f->results));
        assert_non_null(detail);
        assert_true(strlen(detail) <= TETHER_DETAIL_MAX);
        f->results[f->n_results++] = (struct result){
                .cycle = cycle,
                .guid = task_guid ? strdup(task_guid) : NULL,
                .rc = return_code,
                .detail = strdup(detail),
        };
}

static int on_policy_request(struct tether_scheduler *s, const char *user, void *userdata) {
        struct fx *f = userdata;
        struct answer *a = user ? &f->user : &f->machine;

        f->policy_requests++;
        snprintf(f->last_user, sizeof(f->last_user), "%s", user ? user : "");
        if (f->no_answer)
                return 0;
        /* Answer from inside the callback: the scheduler must cope. */
        assert_int_equal(tether_scheduler_policy(s, user, a->result, (const uint8_t *)a->body,
                                                 a->body ? strlen(a->body) : 0, a->sig, a->sig_len,
                                                 a->error),
                         0);
        return 0;
}

static int fake_sessions(uid_t **ret, void *userdata) {
        struct fx *f = userdata;
        uid_t *u = calloc(f->n_uids ? (size_t)f->n_uids : 1, sizeof(uid_t));

        if (!u)
                return -ENOMEM;
        memcpy(u, f->uids, (size_t)f->n_uids * sizeof(uid_t));
        *ret = u;
        return f->n_uids;
}

static void on_output(struct tether_scheduler *s, enum tether_task_type cycle, const char *step, int status,
                      const char *output, size_t len, uint64_t total, void *userdata) {
        struct fx *f = userdata;

        f->outputs++;
        f->last_output_len = len;
        f->last_output_total = total;
        snprintf(f->last_output, sizeof(f->last_output), "%.*s", (int)len, output);
}

static void fx_start(struct fx *f) {
        assert_int_equal(tether_scheduler_new(f->event, &f->opt, on_done, on_policy_request, f, &f->s), 0);
        tether_scheduler_set_session_query(f->s, fake_sessions, f);
        tether_scheduler_set_output_handler(f->s, on_output, f);
}

static int fx_setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->root, sizeof(f->root), "/tmp/tether-sched-XXXXXX");
        assert_non_null(mkdtemp(f->root));
        snprintf(f->state, sizeof(f->state), "%s/state", f->root);
        snprintf(f->cycles, sizeof(f->cycles), "%s/cycles.d", f->root);
        snprintf(f->marks, sizeof(f->marks), "%s/marks", f->root);
        assert_int_equal(mkdir(f->state, 0700), 0);
        assert_int_equal(mkdir(f->cycles, 0755), 0);
        assert_int_equal(mkdir(f->marks, 0755), 0);
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(tether_key_generate(TETHER_KEY_EC_P256, &f->key), 0);
        f->opt = (struct tether_scheduler_options){
                .state_dir = f->state,
                .cycles_dir = f->cycles,
                .site_key = f->key,
                .kill_grace_usec = 300 * USEC_PER_MSEC,
                .random_seed = 42,
        };
        for (int c = 1; c <= TETHER_TASK_TYPE_MAX; c++)
                f->opt.time_limit_usec[c] = 20 * USEC_PER_SEC;
        f->machine.result = TETHER_POLICY_NONE;
        f->user.result = TETHER_POLICY_NONE;
        *state = f;
        return 0;
}

static int fx_teardown(void **state) {
        struct fx *f = *state;
        char cmd[PATH_MAX + 32];

        tether_scheduler_free(f->s);
        for (size_t i = 0; i < f->n_results; i++) {
                free(f->results[i].guid);
                free(f->results[i].detail);
        }
        free(f->machine.body);
        free(f->machine.sig);
        free(f->user.body);
        free(f->user.sig);
        tether_key_free(f->key);
        sd_event_unref(f->event);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/* Runs the loop until n results are in (fails after timeout). */
static void run_until_results(struct fx *f, size_t n, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec;

        while (f->n_results < n) {
                assert_true(now_usec() < end);
                assert_true(sd_event_run(f->event, 100 * USEC_PER_MSEC) >= 0);
        }
}

static void run_until_requests(struct fx *f, unsigned n, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec;

        while (f->policy_requests < n) {
                assert_true(now_usec() < end);
                assert_true(sd_event_run(f->event, 100 * USEC_PER_MSEC) >= 0);
        }
}

static void run_for(struct fx *f, uint64_t usec) {
        uint64_t end = now_usec() + usec;

        while (now_usec() < end)
                assert_true(sd_event_run(f->event, 50 * USEC_PER_MSEC) >= 0);
}

static const char *GUID1 = "11111111-1111-4111-8111-111111111111";
static const char *GUID2 = "22222222-2222-4222-8222-222222222222";
static const char *PID_A = "AAAAAAAA-0000-4000-8000-000000000001";
static const char *PID_B = "BBBBBBBB-0000-4000-8000-000000000002";

static char *path_in(const char *dir, const char *name) {
        char *p;
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

/* ---- tests -------------------------------------------------------------- */

static void test_machine_policy_env_scrubbed(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *env_path = path_in(f->marks, "env");
        _cleanup_(freep) char *env = NULL, *stored = NULL, *stored_path = NULL, *copy = NULL;

        setenv("TETHER_TEST_SECRET", "hunter2", 1);
        setenv("LD_PRELOAD_TEST_LEAK", "x", 1);
        hook(f, "machine-policy", "10-env",
             "env > \"$M/env\"; pwd >> \"$M/env\"; grep -o 'PolicyID=\"[^\"]*\"' \"$TETHER_POLICY\" > "
             "\"$M/policy\"; "
             "[ -r /dev/stdin ] && ! read x; echo stdin-eof=$? >> \"$M/env\"",
             0755);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", NULL));
        fx_start(f);

        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, "param-x"), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_string_equal(f->results[0].guid, GUID1);
        assert_non_null(strstr(f->results[0].detail, PID_A));

        env = read_text(env_path);
        assert_non_null(env);
        assert_null(strstr(env, "TETHER_TEST_SECRET"));
        assert_null(strstr(env, "hunter2"));
        assert_null(strstr(env, "LD_PRELOAD_TEST_LEAK"));
        assert_non_null(strstr(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"));
        assert_non_null(strstr(env, "TETHER_CYCLE=machine-policy\n"));
        assert_non_null(strstr(env, "TETHER_TASK_GUID=11111111-1111-4111-8111-111111111111\n"));
        assert_non_null(strstr(env, "TETHER_TASK_PARAM=param-x\n"));
        assert_true(asprintf(&copy, "TETHER_STATE_DIR=%s\n", f->state) > 0);
        assert_non_null(strstr(env, copy));
        free(copy);
        stored_path = path_in(f->state, "policies/machine.xml");
        /* The verified bytes on fd 3, never a path that could be swapped. */
        assert_non_null(strstr(env, "TETHER_POLICY=/dev/fd/3\n"));
        assert_null(strstr(env, "TETHER_USER="));
        /* cwd is "/", never a directory another user can write; stdin is
         * /dev/null (EOF at once) */
        assert_non_null(strstr(env, "\n/\nstdin-eof=0"));
        copy = NULL;

        stored = read_text(stored_path);
        assert_non_null(stored);
        assert_string_equal(stored, f->machine.body);
        free(copy);
        copy = path_in(f->marks, "policy");
        free(env);
        env = read_text(copy);
        assert_non_null(env);
        assert_non_null(strstr(env, PID_A));
        unsetenv("TETHER_TEST_SECRET");
        unsetenv("LD_PRELOAD_TEST_LEAK");
}

static void test_tampered_policy_rejected_old_kept(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *stored_path = path_in(f->state, "policies/machine.xml");
        _cleanup_(freep) char *runs = path_in(f->marks, "runs");
        _cleanup_(freep) char *good = NULL, *stored = NULL;
        struct tether_key *other = NULL;

        hook(f, "machine-policy", "10-count", "echo run >> \"$M/runs\"", 0755);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", NULL));
        good = strdup(f->machine.body);
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_int_equal(count_lines(runs), 1);

        /* 1: the body altered after signing (B's ID, A's signature). */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T11:00:00Z", NULL));
        char *altered = strstr(f->machine.body, "2026-11-21T11");
        altered[12] = '2';
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID2, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 2);
        assert_non_null(strstr(f->results[1].detail, "policy rejected: signature does not verify"));

        /* 2: signed by another key. */
        assert_int_equal(tether_key_generate(TETHER_KEY_ED25519, &other), 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-21T12:00:00Z", NULL));
        free(f->machine.sig);
        assert_int_equal(tether_sign(other, TETHER_SIG_TYPE_POLICY, (const uint8_t *)f->machine.body,
                                     strlen(f->machine.body), &f->machine.sig, &f->machine.sig_len),
                         0);
        tether_key_free(other);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 2);
        assert_non_null(strstr(f->results[2].detail, "signature"));

        /* 3: right key, wrong type byte (a PUSH signature replayed as a policy). */
        free(f->machine.sig);
        assert_int_equal(tether_sign(f->key, 0x01, (const uint8_t *)f->machine.body, strlen(f->machine.body),
                                     &f->machine.sig, &f->machine.sig_len),
                         0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 4, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[3].rc, 2);
        assert_non_null(strstr(f->results[3].detail, "signature"));

        /* 4: validly signed but older than the stored one: a rollback. */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-20T10:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 5, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[4].rc, 2);
        assert_non_null(strstr(f->results[4].detail, "older"));

        /* 5: no signature at all. */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-22T10:00:00Z", NULL));
        free(f->machine.sig);
        f->machine.sig = NULL;
        f->machine.sig_len = 0;
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 6, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[5].rc, 2);

        /* None of them was stored or ran a hook; the first one stays. */
        stored = read_text(stored_path);
        assert_string_equal(stored, good);
        assert_int_equal(count_lines(runs), 1);

        /* And UNCHANGED still finds the good one, verified. */
        answer_set(f, &f->machine, TETHER_POLICY_UNCHANGED, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 7, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[6].rc, 1);
        assert_non_null(strstr(f->results[6].detail, "unchanged"));
        assert_int_equal(count_lines(runs), 2);

        /* A stored file tampered on disk is refused on use. */
        free(stored);
        stored = strdup(good);
        stored[strlen(stored) - 3] = 'X'; /* </PolicX> */
        write_file(stored_path, stored, 0644);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 8, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[7].rc, 2);
        assert_non_null(strstr(f->results[7].detail, "stored policy refused"));
        assert_int_equal(count_lines(runs), 2);
}

static void test_invalid_policies_rejected(void **state) {
        struct fx *f = *state;
        static const char *bad[] = {
                "<!DOCTYPE Policy [<!ENTITY x \"y\">]><Policy Version=\"1\" Scope=\"machine\" "
                "TimeStamp=\"2026-11-21T10:00:00Z\" PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"/>",
                "<Policy Version=\"2\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"/>",
                "<Policy Version=\"1\" Scope=\"user\" User=\"x\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"/>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"yesterday\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"/>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"nope\"/>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Intervals><MachinePolicy>10</"
                "MachinePolicy>"
                "</Intervals></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Applications><Application ID=\"a b\">"
                "<Intent>Required</Intent><Detect>true</Detect><Install>true</Install></Application>"
                "</Applications></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Applications><Application ID=\"a\">"
                "<Intent>Required</Intent><Detect>true</Detect></Application></Applications></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Applications><Application ID=\"a\">"
                "<Intent>Maybe</Intent><Detect>true</Detect><Install>x</Install></Application>"
                "</Applications></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Applications><Application ID=\"a\">"
                "<Intent>Required</Intent><Detect>true</Detect><Install>x</Install>"
                "<TimeoutSeconds>0</TimeoutSeconds></Application></Applications></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Applications>"
                "<Application ID=\"a\"><Intent>Required</Intent><Detect>true</Detect><Install>x</Install>"
                "</Application><Application ID=\"a\"><Intent>Required</Intent><Detect>true</Detect>"
                "<Install>x</Install></Application></Applications></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"><Settings><Setting>v</Setting>"
                "</Settings></Policy>",
                "<Policy Version=\"1\" Scope=\"machine\" TimeStamp=\"2026-11-21T10:00:00Z\" "
                "PolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\">",
                "<NotPolicy/>",
        };
        _cleanup_(freep) char *stored_path = path_in(f->state, "policies/machine.xml");

        fx_start(f);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                answer_set(f, &f->machine, TETHER_POLICY_NEW, strdup(bad[i]));
                assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
                run_until_results(f, i + 1, 10 * USEC_PER_SEC);
                if (f->results[i].rc != 2 || !strstr(f->results[i].detail, "policy rejected"))
                        fail_msg("bad policy %zu accepted: rc %u, %s", i, f->results[i].rc,
                                 f->results[i].detail);
        }
        assert_int_equal(access(stored_path, F_OK), -1);

        /* A valid one with every optional part is accepted (the control). */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z",
                               "<Intervals><AppEvaluation>120</AppEvaluation></Intervals><Settings>"
                               "<Setting Name=\"k\">v</Setting></Settings><Applications>"
                               "<Application ID=\"a.b+c-d_e\" Version=\"1\"><Intent>Uninstall</Intent>"
                               "<Detect>false</Detect><Uninstall>true</Uninstall>"
                               "<TimeoutSeconds>86400</TimeoutSeconds></Application></Applications>"));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, ELEMENTSOF(bad) + 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[ELEMENTSOF(bad)].rc, 1);
        assert_int_equal(access(stored_path, F_OK), 0);
}

static void test_policy_none_and_error(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *stored_path = path_in(f->state, "policies/machine.xml");
        _cleanup_(freep) char *seen_path = path_in(f->marks, "seen");
        _cleanup_(freep) char *seen = NULL, *stored = NULL, *both = NULL;

        /* Both hooks read fd 3 itself (not /dev/fd/3): each one must get
         * the whole policy from the start. */
        hook(f, "machine-policy", "10-seen",
             "echo \"[$TETHER_POLICY]\" >> \"$M/seen\"; [ -z \"$TETHER_POLICY\" ] || "
             "grep -o 'PolicyID=\"[^\"]*\"' <&3 >> \"$M/seen\"",
             0755);
        hook(f, "machine-policy", "20-again", "[ -z \"$TETHER_POLICY\" ] || cat <&3 | wc -c >> \"$M/seen\"",
             0755);
        fx_start(f);

        /* 404 with nothing stored: the cycle succeeds without a policy. */
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_non_null(strstr(f->results[0].detail, "no policy"));
        seen = read_text(seen_path);
        assert_string_equal(seen, "[]\n");
        free(seen);

        /* UNCHANGED with nothing stored cannot succeed. */
        answer_set(f, &f->machine, TETHER_POLICY_UNCHANGED, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 2);
        assert_non_null(strstr(f->results[1].detail, "no stored policy"));

        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z",
                               "<Settings><Setting Name=\"k\">v</Setting></Settings>"));
        assert_true(asprintf(&both, "\"\n%zu\n[/dev/fd/3]", strlen(f->machine.body)) > 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 1);
        assert_int_equal(access(stored_path, F_OK), 0);

        /* A 404 is not signed: it removes nothing, and the hooks run with
         * the policy still in force. */
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 4, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[3].rc, 1);
        assert_non_null(strstr(f->results[3].detail, "no policy on the MP (404), policy "
                                                     "AAAAAAAA-0000-4000-8000-000000000001 kept"));
        assert_int_equal(access(stored_path, F_OK), 0);
        seen = read_text(seen_path);
        assert_non_null(strstr(seen, "[/dev/fd/3]\nPolicyID=\"AAAAAAAA-0000-4000-8000-000000000001\"\n"));
        /* The second hook read all of it too. */
        assert_non_null(strstr(seen, both));

        /* A signed empty Policy withdraws it. */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-21T11:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 5, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[4].rc, 1);
        assert_non_null(strstr(f->results[4].detail, "(empty) stored"));
        stored = read_text(stored_path);
        assert_string_equal(stored, f->machine.body);

        /* An error code out of range from the channel process (abs(INT_MIN)
         * would be undefined) is just an unknown error. */
        answer_set(f, &f->machine, TETHER_POLICY_ERROR, NULL);
        f->machine.error = INT32_MIN;
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 6, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[5].rc, 2);
        assert_non_null(strstr(f->results[5].detail, "fetch failed: unknown error"));
        f->machine.error = -ECONNREFUSED;
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 7, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[6].rc, 2);
        assert_non_null(strstr(f->results[6].detail, "fetch failed: Connection refused"));

        /* An answer nobody asked for is refused. */
        assert_int_equal(tether_scheduler_policy(f->s, NULL, TETHER_POLICY_NONE, NULL, 0, NULL, 0, 0),
                         -ESRCH);
}

/* Issue 10: the newest TimeStamp accepted is kept apart from the policy
 * file, so losing that file does not let an older signed revision back. */
static void test_rollback_floor(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *stored_path = path_in(f->state, "policies/machine.xml");
        _cleanup_(freep) char *sig_path = path_in(f->state, "policies/machine.xml.sig");
        _cleanup_(freep) char *floor_path = path_in(f->state, "floor/machine");
        _cleanup_(freep) char *floor = NULL;

        fx_start(f);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-21T12:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        floor = read_text(floor_path);
        assert_string_equal(floor, "2026-11-21T12:00:00Z\n");
        assert_int_equal(unlink(stored_path), 0);
        assert_int_equal(unlink(sig_path), 0);

        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T11:59:59Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 2);
        assert_non_null(strstr(f->results[1].detail, "older than 2026-11-21T12:00:00Z"));
        assert_int_equal(access(stored_path, F_OK), -1);

        /* The same revision again (a lost ETag) is fine. */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-21T12:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 1);

        /* An unreadable floor refuses everything rather than nothing. */
        write_file(floor_path, "garbage\n", 0600);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2027-01-01T00:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 4, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[3].rc, 2);
        assert_non_null(strstr(f->results[3].detail, "rollback floor is unreadable"));
}

/* Issue 10 (low): the channel process is not trusted to send a bounded
 * number of requests. */
static void test_pending_bounded(void **state) {
        struct fx *f = *state;
        char param[32];

        f->no_answer = true;
        fx_start(f);
        for (unsigned i = 0; i < TETHER_SCHEDULER_PENDING_MAX; i++) {
                /* Distinct users: distinct runs, which coalescing does not join. */
                snprintf(param, sizeof(param), "u%u", i % 64);
                assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID1, param), 0);
        }
        assert_int_equal(tether_scheduler_pending(f->s), TETHER_SCHEDULER_PENDING_MAX);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID2, NULL), -ENOBUFS);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID2, "u1"), -ENOBUFS);
        assert_int_equal(tether_scheduler_pending(f->s), TETHER_SCHEDULER_PENDING_MAX);
        assert_int_equal(f->n_results, 0);
}

static void test_run_parts_filtering(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *order_path = path_in(f->marks, "order");
        _cleanup_(freep) char *order = NULL;
        char path[PATH_MAX * 2];
        const char *d;

        hook(f, "machine-policy", "50-second", "echo 50 >> \"$M/order\"", 0755);
        hook(f, "machine-policy", "10-first", "echo 10 >> \"$M/order\"", 0700);
        hook(f, "machine-policy", "20-world-writable", "echo 20 >> \"$M/order\"", 0755);
        snprintf(path, sizeof(path), "%s/machine-policy/20-world-writable", f->cycles);
        assert_int_equal(chmod(path, 0777), 0); /* past the umask */
        hook(f, "machine-policy", "25-group-writable", "echo 25 >> \"$M/order\"", 0775);
        snprintf(path, sizeof(path), "%s/machine-policy/25-group-writable", f->cycles);
        assert_int_equal(chmod(path, 0775), 0);
        hook(f, "machine-policy", "30-not-executable", "echo 30 >> \"$M/order\"", 0644);
        hook(f, "machine-policy", "40.dpkg-old", "echo 40 >> \"$M/order\"", 0755);
        hook(f, "machine-policy", ".hidden", "echo hidden >> \"$M/order\"", 0755);
        hook(f, "machine-policy", "60-fails", "echo 60 >> \"$M/order\"; echo 'it broke' >&2; exit 3", 0755);
        snprintf(path, sizeof(path), "%s/machine-policy/45-directory", f->cycles);
        assert_int_equal(mkdir(path, 0755), 0);
        /* A FIFO must be skipped without being opened (that would block). */
        snprintf(path, sizeof(path), "%s/machine-policy/35-fifo", f->cycles);
        assert_int_equal(mkfifo(path, 0755), 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", NULL));
        fx_start(f);

        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        order = read_text(order_path);
        assert_string_equal(order, "10\n50\n60\n");
        d = f->results[0].detail;
        assert_int_equal(f->results[0].rc, 2);
        assert_non_null(strstr(d, "skipped: 20-world-writable (writable by group or others)"));
        assert_non_null(strstr(d, "skipped: 25-group-writable (writable by group or others)"));
        assert_non_null(strstr(d, "skipped: 30-not-executable (not executable)"));
        assert_non_null(strstr(d, "skipped: 45-directory (not a regular file)"));
        assert_non_null(strstr(d, "skipped: 35-fifo (not a regular file)"));
        assert_non_null(strstr(d, "hook 60-fails failed (exit 3): it broke"));
        assert_null(strstr(d, "dpkg-old"));
        assert_null(strstr(d, "hidden"));

        /* A hooks directory writable by others runs nothing at all. */
        snprintf(path, sizeof(path), "%s/machine-policy", f->cycles);
        assert_int_equal(chmod(path, 0777), 0);
        answer_set(f, &f->machine, TETHER_POLICY_UNCHANGED, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID2, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 2);
        assert_non_null(strstr(f->results[1].detail, "writable by group or others: no hook run"));
        assert_int_equal(count_lines(order_path), 3);
}

static void test_coalescing_and_order(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *runs_path = path_in(f->marks, "runs");
        _cleanup_(freep) char *log_path = path_in(f->marks, "log");
        _cleanup_(freep) char *log = NULL, *apps = NULL;
        const char *guids[] = {
                "A0000000-0000-4000-8000-000000000001", "A0000000-0000-4000-8000-000000000002",
                "A0000000-0000-4000-8000-000000000003", "A0000000-0000-4000-8000-000000000004",
                "A0000000-0000-4000-8000-000000000005", "A0000000-0000-4000-8000-000000000006"};
        bool seen[6] = {false};

        hook(f, "machine-policy", "10-slow",
             "echo run >> \"$M/runs\"; echo mp-start >> \"$M/log\"; sleep 0.4; echo mp-end >> \"$M/log\"",
             0755);
        assert_true(asprintf(&apps,
                             "<Applications><Application ID=\"probe\"><Intent>Required</Intent>"
                             "<Detect>echo app-detect &gt;&gt; %s/log</Detect><Install>false</Install>"
                             "</Application></Applications>",
                             f->marks) > 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", apps));
        fx_start(f);

        /* Three requests for a queued cycle: one run, three answers. */
        for (int i = 0; i < 3; i++)
                assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, guids[i], NULL),
                                 0);
        assert_int_equal(tether_scheduler_pending(f->s), 3);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(count_lines(runs_path), 1);
        assert_int_equal(f->policy_requests, 1);

        /* One request starts a run; two more while it runs make exactly
         * one more run after it. App evaluation queued behind waits. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, guids[3], NULL), 0);
        run_until_requests(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, NULL, NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, guids[4], NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, guids[5], NULL), 0);
        assert_int_equal(tether_scheduler_pending(f->s), 4);
        run_until_results(f, 7, 20 * USEC_PER_SEC);
        assert_int_equal(count_lines(runs_path), 3);
        assert_int_equal(tether_scheduler_pending(f->s), 0);

        for (size_t i = 0; i < f->n_results; i++) {
                if (f->results[i].cycle == TETHER_TASK_APP_EVALUATION) {
                        assert_null(f->results[i].guid);
                        continue;
                }
                assert_int_equal(f->results[i].rc, 1);
                for (int g = 0; g < 6; g++)
                        if (f->results[i].guid && strcmp(f->results[i].guid, guids[g]) == 0) {
                                assert_false(seen[g]);
                                seen[g] = true;
                        }
        }
        for (int g = 0; g < 6; g++)
                assert_true(seen[g]);

        /* Never overlapping: app evaluation (submitted while the second
         * machine run was running) ran after it ended, FIFO before the third. */
        log = read_text(log_path);
        assert_string_equal(log, "mp-start\nmp-end\nmp-start\nmp-end\napp-detect\nmp-start\nmp-end\n");

        /* Bad input. */
        assert_int_equal(tether_scheduler_submit(f->s, (enum tether_task_type)0, NULL, NULL), -EINVAL);
        assert_int_equal(tether_scheduler_submit(f->s, (enum tether_task_type)4, NULL, NULL), -EINVAL);
}

static int pidfd_open_(pid_t pid) {
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void test_time_limit_kills_process_group(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *gc_path = path_in(f->marks, "grandchild");
        _cleanup_(freep) char *gc_text = NULL;
        struct pollfd pfd;
        siginfo_t si = {0};
        uint64_t start;
        pid_t gc;
        int pidfd;

        /* Orphans come to us, so that we can tell how the grandchild died. */
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
        hook(f, "machine-policy", "10-hangs",
             "sh -c 'trap \"\" TERM; echo $$ > \"$0/grandchild.tmp\"; mv \"$0/grandchild.tmp\" "
             "\"$0/grandchild\"; "
             "exec sleep 30' \"$M\" &\n"
             "sleep 30",
             0755);
        f->opt.time_limit_usec[TETHER_TASK_MACHINE_POLICY] = 700 * USEC_PER_MSEC;
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);

        start = now_usec();
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 6);
        assert_non_null(strstr(f->results[0].detail, "hook 10-hangs timed out"));
        assert_true(now_usec() - start < 5 * USEC_PER_SEC);

        gc_text = read_text(gc_path);
        assert_non_null(gc_text);
        gc = (pid_t)strtol(gc_text, NULL, 10);
        assert_true(gc > 1);
        pidfd = pidfd_open_(gc);
        assert_true(pidfd >= 0); /* our zombie, or about to be */
        pfd = (struct pollfd){.fd = pidfd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        assert_int_equal(waitid(P_PID, (id_t)gc, &si, WEXITED), 0);
        assert_int_equal(si.si_code, CLD_KILLED);
        assert_int_equal(si.si_status, SIGKILL);
        close(pidfd);
        assert_int_equal(kill(gc, 0), -1);
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
}

static void test_output_cap(void **state) {
        struct fx *f = *state;
        uint64_t start;

        hook(f, "machine-policy", "10-chatty",
             "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo to-stderr >&2; echo done > \"$M/done\"",
             0755);
        hook(f, "machine-policy", "20-fails-loudly",
             "printf 'line one\\n\\001ctl\\tline two: the \\303\\251 reason\\377\\n'; exit 4", 0755);
        f->opt.output_cap = 1000;
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);
        start = now_usec();
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_true(now_usec() - start < 8 * USEC_PER_SEC);
        assert_int_equal(f->outputs, 2);
        /* The chatty hook never blocked, its output was kept up to the cap
         * and the rest counted. (last_* is the second hook's.) */
        _cleanup_(freep) char *done_path = path_in(f->marks, "done");
        assert_int_equal(access(done_path, F_OK), 0);
        assert_int_equal(f->results[0].rc, 2);
        /* Detail carries the last line, cleaned: no control bytes, valid UTF-8. */
        assert_non_null(strstr(f->results[0].detail, "hook 20-fails-loudly failed (exit 4): "
                                                     " ctl line two: the \xc3\xa9 reason?"));
        assert_null(strstr(f->results[0].detail, "10-chatty"));
}

static void output_cap_exact(struct tether_scheduler *s, enum tether_task_type cycle, const char *step,
                             int status, const char *output, size_t len, uint64_t total, void *userdata) {
        struct fx *f = userdata;

        f->outputs++;
        f->last_output_len = len;
        f->last_output_total = total;
        for (size_t i = 0; i < len; i++)
                assert_int_equal(output[i], 'x');
}

static void test_output_cap_counts(void **state) {
        struct fx *f = *state;

        hook(f, "machine-policy", "10-chatty", "head -c 300000 /dev/zero | tr '\\0' x", 0755);
        f->opt.output_cap = 1000;
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);
        tether_scheduler_set_output_handler(f->s, output_cap_exact, f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_int_equal(f->outputs, 1);
        assert_int_equal(f->last_output_len, 1000);
        assert_int_equal(f->last_output_total, 300000);
}

static void test_app_evaluation(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *apps = NULL, *present = path_in(f->marks, "present");
        _cleanup_(freep) char *rm = path_in(f->marks, "rm"), *inst = path_in(f->marks, "inst");
        const char *d;
        uint64_t start;

        write_file(present, "", 0644);
        write_file(rm, "", 0644);
        assert_true(
                asprintf(&apps,
                         "<Applications>"
                         "<Application ID=\"present\"><Intent>Required</Intent><Detect>test -e %1$s/present"
                         "</Detect><Install>exit 9</Install></Application>"
                         "<Application ID=\"install-me\" Version=\"2.10\"><Intent>Required</Intent>"
                         "<Detect>test -e %1$s/inst</Detect><Install>[ \"$TETHER_APP_ID\" = install-me ] "
                         "&amp;&amp; touch %1$s/inst</Install></Application>"
                         "<Application ID=\"remove-me\"><Intent>Uninstall</Intent><Detect>test -e %1$s/rm"
                         "</Detect><Uninstall>rm %1$s/rm</Uninstall></Application>"
                         "<Application ID=\"broken\"><Intent>Required</Intent><Detect>test -e %1$s/never"
                         "</Detect><Install>echo no space left; exit 5</Install></Application>"
                         "<Application ID=\"slow\"><Intent>Required</Intent><Detect>false</Detect>"
                         "<Install>sleep 30</Install><TimeoutSeconds>1</TimeoutSeconds></Application>"
                         "<Application ID=\"absent\"><Intent>Uninstall</Intent><Detect>false</Detect>"
                         "<Uninstall>exit 9</Uninstall></Application>"
                         "<Application ID=\"liar\"><Intent>Required</Intent><Detect>false</Detect>"
                         "<Install>true</Install></Application>"
                         "<Application ID=\"sticky\"><Intent>Uninstall</Intent><Detect>true</Detect>"
                         "<Uninstall>true</Uninstall></Application>"
                         "</Applications>",
                         f->marks) > 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", apps));
        fx_start(f);
        /* Store the policy through a machine policy cycle first. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);

        start = now_usec();
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID1, NULL), 0);
        run_until_results(f, 2, 15 * USEC_PER_SEC);
        assert_true(now_usec() - start < 8 * USEC_PER_SEC);
        d = f->results[1].detail;
        assert_int_equal(f->results[1].rc, 2);
        assert_non_null(strstr(d, "present: compliant"));
        assert_non_null(strstr(d, "install-me: installed"));
        assert_non_null(strstr(d, "remove-me: removed"));
        assert_non_null(strstr(d, "broken: failed (exit 5): no space left"));
        assert_non_null(strstr(d, "slow: timed out (install)"));
        assert_non_null(strstr(d, "absent: compliant"));
        assert_non_null(strstr(d, "liar: failed (not detected after install)"));
        assert_non_null(strstr(d, "sticky: failed (still detected after uninstall)"));
        assert_int_equal(access(inst, F_OK), 0);
        assert_int_equal(access(rm, F_OK), -1);

        /* A second evaluation: what was fixed stays compliant. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID2, NULL), 0);
        run_until_results(f, 3, 15 * USEC_PER_SEC);
        assert_non_null(strstr(f->results[2].detail, "install-me: compliant"));
        assert_non_null(strstr(f->results[2].detail, "remove-me: compliant"));
}

static void test_app_evaluation_compliant_and_cycle_limit(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *apps = NULL;

        assert_true(asprintf(&apps,
                             "<Applications>"
                             "<Application ID=\"one\"><Intent>Required</Intent><Detect>true</Detect>"
                             "<Install>false</Install></Application>"
                             "<Application ID=\"two\"><Intent>Uninstall</Intent><Detect>false</Detect>"
                             "<Uninstall>false</Uninstall></Application>"
                             "</Applications>") > 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z", apps));
        f->opt.time_limit_usec[TETHER_TASK_APP_EVALUATION] = 600 * USEC_PER_MSEC;
        fx_start(f);
        /* No policy yet: nothing to evaluate, which is compliant. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_non_null(strstr(f->results[0].detail, "no application deployments"));

        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID1, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 1);
        assert_string_equal(f->results[2].detail, "one: compliant; two: compliant");

        /* The cycle's own limit: 6, the step named. */
        free(apps);
        assert_true(asprintf(&apps, "<Applications><Application ID=\"hang\"><Intent>Required</Intent>"
                                    "<Detect>sleep 30</Detect><Install>true</Install></Application>"
                                    "</Applications>") > 0);
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_B, "2026-11-21T11:00:00Z", apps));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 4, 10 * USEC_PER_SEC);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID2, NULL), 0);
        run_until_results(f, 5, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[4].rc, 6);
        assert_non_null(strstr(f->results[4].detail, "hang: timed out (detect)"));
        assert_non_null(strstr(f->results[4].detail, "cycle time limit"));
}

static void test_user_policy_runs_as_user(void **state) {
        struct fx *f = *state;
        char out[] = "/tmp/tether-sched-out-XXXXXX";
        char path[PATH_MAX];
        _cleanup_(freep) char *uid = NULL, *policy = NULL, *env = NULL, *body = NULL, *stored = NULL;

        if (geteuid() != 0) {
                print_message("skipped: needs root (the hook drops to user nobody)\n");
                skip();
        }
        assert_non_null(mkdtemp(out));
        assert_int_equal(chmod(out, 0777), 0);
        _cleanup_(freep) char *script = NULL;
        /* The marks directory is root's (0700): the hook writes to out. */
        assert_true(asprintf(&script,
                             "O='%s'; id -u > \"$O/uid\"; id -G > \"$O/groups\"; "
                             "cat \"$TETHER_POLICY\" > \"$O/policy\"; env > \"$O/env\"; pwd >> \"$O/env\"",
                             out) > 0);
        hook(f, "user-policy", "10-whoami", script, 0755);
        body = make_policy("nobody", PID_B, "2026-11-21T10:00:00Z", NULL);
        answer_set(f, &f->user, TETHER_POLICY_NEW, strdup(body));
        f->uids[0] = 0; /* root's session is never served */
        f->uids[1] = 65534;
        f->n_uids = 2;
        fx_start(f);

        /* The user named in TaskParam. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID1, "nobody"), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_string_equal(f->last_user, "nobody");
        snprintf(path, sizeof(path), "%s/uid", out);
        uid = read_text(path);
        assert_non_null(uid);
        assert_string_equal(uid, "65534\n");
        snprintf(path, sizeof(path), "%s/policy", out);
        policy = read_text(path);
        assert_non_null(policy);
        assert_string_equal(policy, body);
        snprintf(path, sizeof(path), "%s/env", out);
        env = read_text(path);
        assert_non_null(env);
        assert_non_null(strstr(env, "TETHER_USER=nobody\n"));
        assert_non_null(strstr(env, "USER=nobody\n"));
        assert_non_null(strstr(env, "HOME=/nonexistent\n"));
        assert_non_null(strstr(env, "TETHER_POLICY=/dev/fd/3\n"));
        assert_non_null(strstr(env, "TETHER_CYCLE=user-policy\n"));
        assert_non_null(strstr(env, "\n/\n")); /* HOME unreachable: cwd "/" */
        snprintf(path, sizeof(path), "%s/groups", out);
        free(uid);
        uid = read_text(path);
        assert_non_null(uid);
        assert_null(strstr(uid, " 0 "));
        assert_true(strncmp(uid, "0", 1) != 0);
        snprintf(path, sizeof(path), "%s/policies/user/nobody.xml", f->state);
        stored = read_text(path);
        assert_string_equal(stored, body);

        /* Every user with a session: the same, and root is skipped. */
        snprintf(path, sizeof(path), "%s/uid", out);
        unlink(path);
        answer_set(f, &f->user, TETHER_POLICY_UNCHANGED, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID2, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 1);
        free(uid);
        uid = read_text(path);
        assert_non_null(uid);
        assert_string_equal(uid, "65534\n");
        assert_non_null(strstr(f->results[1].detail, "nobody: policy"));

        /* A policy signed for another user is refused as nobody's. */
        answer_set(f, &f->user, TETHER_POLICY_NEW,
                   make_policy("alice", PID_A, "2026-11-22T10:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, "nobody"), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 2);
        assert_non_null(strstr(f->results[2].detail, "User is not 'nobody'"));

        snprintf(path, sizeof(path), "rm -rf '%s'", out);
        assert_int_equal(system(path), 0);
}

static void test_user_policy_invalid_task(void **state) {
        struct fx *f = *state;

        hook(f, "user-policy", "10-never", "echo ran >> \"$M/ran\"", 0755);
        f->n_uids = 0;
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID1, "nobody"), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 4);
        assert_string_equal(f->results[0].detail, "user 'nobody' has no active session");

        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, "no-such-user-tether"),
                         0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 4);
        assert_non_null(strstr(f->results[1].detail, "does not exist"));

        f->uids[0] = 0;
        f->n_uids = 1;
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, "root"), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 4);
        assert_non_null(strstr(f->results[2].detail, "never runs as root"));

        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, "../etc/passwd"), 0);
        run_until_results(f, 4, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[3].rc, 4);
        assert_non_null(strstr(f->results[3].detail, "not a valid user name"));

        /* All users, but only root is logged in: nothing to do. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, NULL), 0);
        run_until_results(f, 5, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[4].rc, 1);
        assert_non_null(strstr(f->results[4].detail, "no user with an active session"));
        _cleanup_(freep) char *ran = path_in(f->marks, "ran");
        assert_int_equal(access(ran, F_OK), -1);
        assert_int_equal(f->policy_requests, 0);

        /* The default query (sd-login) works wherever this runs; whoever is
         * logged in gets "no policy" and no hook changes anything. */
        unlink(ran);
        tether_scheduler_set_session_query(f->s, NULL, NULL);
        f->user.result = TETHER_POLICY_NONE;
        hook(f, "user-policy", "10-never", "true", 0755);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, NULL), 0);
        run_until_results(f, 6, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[5].rc, 1);
}

static void test_cancel_all(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *pid_path = path_in(f->marks, "pid");
        _cleanup_(freep) char *pid_text = NULL;
        pid_t pid;

        hook(f, "machine-policy", "10-hang", "echo $$ > \"$M/pid\"; exec sleep 30", 0755);
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID2, NULL), 0);
        run_until_requests(f, 1, 10 * USEC_PER_SEC);
        while (access(pid_path, F_OK) < 0)
                run_for(f, 50 * USEC_PER_MSEC);
        run_for(f, 100 * USEC_PER_MSEC);
        pid_text = read_text(pid_path);
        pid = (pid_t)strtol(pid_text, NULL, 10);
        assert_true(pid > 1);

        tether_scheduler_cancel_all(f->s);
        assert_int_equal(f->n_results, 2);
        assert_int_equal(f->results[0].rc, 7);
        assert_int_equal(f->results[1].rc, 7);
        assert_int_equal(tether_scheduler_pending(f->s), 0);

        /* A new request waits for the cancelled child to go, then runs. */
        unlink(pid_path);
        hook(f, "machine-policy", "10-hang", "echo fine", 0755);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 1);
        assert_true(kill(pid, 0) < 0);
}

static void test_detail_truncated(void **state) {
        struct fx *f = *state;
        char name[128];
        const char *d;

        for (int i = 0; i < 80; i++) {
                snprintf(name, sizeof(name), "%02d-a-rather-long-hook-name-that-is-not-executable", i);
                hook(f, "machine-policy", name, "exit 0", 0644);
        }
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        d = f->results[0].detail;
        assert_true(strlen(d) <= TETHER_DETAIL_MAX);
        assert_true(strlen(d) > TETHER_DETAIL_MAX - 8);
        assert_string_equal(d + strlen(d) - 3, "...");
        assert_non_null(strstr(d, "skipped: 00-a-rather"));
}

static void test_periodic(void **state) {
        struct fx *f = *state;
        uint64_t next = 0, interval = 0, now = 0;

        f->opt.interval_usec[TETHER_TASK_APP_EVALUATION] = 2 * USEC_PER_SEC;
        f->opt.interval_usec[TETHER_TASK_MACHINE_POLICY] = 3600 * USEC_PER_SEC;
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z",
                               "<Intervals><MachinePolicy>120</MachinePolicy></Intervals>"));
        fx_start(f);
        assert_int_equal(tether_scheduler_next_run(f->s, TETHER_TASK_USER_POLICY, &next, &interval),
                         -ENOENT);
        assert_int_equal(tether_scheduler_next_run(f->s, TETHER_TASK_MACHINE_POLICY, &next, &interval), 0);
        assert_int_equal(interval, 3600 * USEC_PER_SEC);
        assert_true(sd_event_now(f->event, CLOCK_BOOTTIME, &now) >= 0);
        assert_true(next > now && next <= now + 3600 * USEC_PER_SEC);

        /* A periodic run answers with task_guid NULL within interval + slack. */
        run_until_results(f, 1, 5 * USEC_PER_SEC);
        assert_int_equal(f->results[0].cycle, TETHER_TASK_APP_EVALUATION);
        assert_null(f->results[0].guid);
        assert_int_equal(f->results[0].rc, 1);

        /* The machine policy's Intervals override the option. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        /* Periodic app evaluations keep coming meanwhile: wait for ours. */
        for (bool found = false; !found;) {
                run_until_results(f, f->n_results + 1, 5 * USEC_PER_SEC);
                struct result *last = &f->results[f->n_results - 1];
                found = last->guid && strcmp(last->guid, GUID1) == 0;
                if (found)
                        assert_int_equal(last->rc, 1);
        }
        assert_int_equal(tether_scheduler_next_run(f->s, TETHER_TASK_MACHINE_POLICY, &next, &interval), 0);
        assert_int_equal(interval, 120 * USEC_PER_SEC);
        assert_true(sd_event_now(f->event, CLOCK_BOOTTIME, &now) >= 0);
        assert_true(next > now && next <= now + 120 * USEC_PER_SEC);

        /* The same seed gives the same offset; the override survives a restart. */
        f->s = tether_scheduler_free(f->s);
        fx_start(f);
        assert_int_equal(tether_scheduler_next_run(f->s, TETHER_TASK_MACHINE_POLICY, &next, &interval), 0);
        assert_int_equal(interval, 120 * USEC_PER_SEC);
}

static void test_sigchld_not_blocked(void **state) {
        struct fx *f = *state;
        sigset_t mask;

        hook(f, "machine-policy", "10-any", "true", 0755);
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        fx_start(f);
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        assert_int_equal(sigprocmask(SIG_UNBLOCK, &mask, NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 5 * USEC_PER_SEC);
        assert_int_equal(sigprocmask(SIG_BLOCK, &mask, NULL), 0);
        assert_int_equal(f->results[0].rc, 2);
        assert_non_null(strstr(f->results[0].detail, "SIGCHLD is not blocked"));
}

static void test_policy_wait_timeout_and_cancel(void **state) {
        struct fx *f = *state;

        f->no_answer = true;
        f->opt.time_limit_usec[TETHER_TASK_MACHINE_POLICY] = 500 * USEC_PER_MSEC;
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 1, 5 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 6);
        assert_non_null(strstr(f->results[0].detail, "timed out waiting for the policy"));
        /* The answer arrives too late: dropped. */
        assert_int_equal(tether_scheduler_policy(f->s, NULL, TETHER_POLICY_NONE, NULL, 0, NULL, 0, 0),
                         -ESRCH);

        /* Cancelled while waiting for the policy, then a late answer. */
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID2, NULL), 0);
        f->uids[0] = 65534;
        f->n_uids = 1;
        run_until_requests(f, 2, 5 * USEC_PER_SEC);
        assert_string_equal(f->last_user, "nobody");
        /* An answer for someone else is not taken. */
        assert_int_equal(tether_scheduler_policy(f->s, NULL, TETHER_POLICY_NONE, NULL, 0, NULL, 0, 0),
                         -ESRCH);
        assert_int_equal(tether_scheduler_policy(f->s, "root", TETHER_POLICY_NONE, NULL, 0, NULL, 0, 0),
                         -ESRCH);
        tether_scheduler_cancel_all(f->s);
        assert_int_equal(f->n_results, 2);
        assert_int_equal(f->results[1].rc, 7);
        assert_string_equal(f->results[1].guid, GUID2);
        assert_int_equal(tether_scheduler_policy(f->s, "nobody", TETHER_POLICY_NONE, NULL, 0, NULL, 0, 0),
                         -ESRCH);
        run_for(f, 100 * USEC_PER_MSEC);
        assert_int_equal(tether_scheduler_pending(f->s), 0);
        assert_int_equal(f->n_results, 2);
}

static void test_user_policy_applications(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *apps = NULL, *env_path = path_in(f->marks, "app-env");
        _cleanup_(freep) char *env = NULL;

        /* No hooks: this runs without root. */
        assert_true(asprintf(&apps,
                             "<Applications><Application ID=\"tool\"><Intent>Required</Intent>"
                             "<Detect>env &gt; %s/app-env</Detect><Install>false</Install></Application>"
                             "</Applications>",
                             f->marks) > 0);
        answer_set(f, &f->user, TETHER_POLICY_NEW,
                   make_policy("nobody", PID_B, "2026-11-21T10:00:00Z", apps));
        answer_set(
                f, &f->machine, TETHER_POLICY_NEW,
                make_policy(NULL, PID_A, "2026-11-21T10:00:00Z",
                            "<Applications><Application ID=\"base\"><Intent>Required</Intent>"
                            "<Detect>true</Detect><Install>false</Install></Application></Applications>"));
        f->uids[0] = 65534;
        f->n_uids = 1;
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, NULL, NULL), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID1, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 1);
        assert_int_equal(f->results[2].rc, 1);
        assert_string_equal(f->results[2].detail, "base: compliant; tool (user nobody): compliant");
        env = read_text(env_path);
        assert_non_null(env);
        assert_non_null(strstr(env, "TETHER_USER=nobody\n"));
        assert_non_null(strstr(env, "TETHER_APP_ID=tool\n"));
        assert_non_null(strstr(env, "TETHER_CYCLE=app-evaluation\n"));
        /* The user policy's verified bytes, not its path; cwd "/". */
        assert_non_null(strstr(env, "TETHER_POLICY=/dev/fd/3\n"));
        assert_non_null(strstr(env, "PWD=/\n"));
}

/* cycles.d/app-evaluation/ runs after the applications, like the policy
 * cycles' hooks: in name order, with the machine policy, reported in
 * Detail; a failing hook fails the cycle, an unsafe one is skipped. */
static void test_app_evaluation_hooks(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *order_path = path_in(f->marks, "order"), *env_path = path_in(f->marks, "env"),
                              *policy_path = path_in(f->marks, "policy");
        _cleanup_(freep) char *order = NULL, *env = NULL, *policy = NULL;
        char path[PATH_MAX * 2];

        /* Before any machine policy: no deployments, the hook still runs. */
        hook(f, "app-evaluation", "10-first",
             "echo \"10 $TETHER_CYCLE\" >> \"$M/order\"; env > \"$M/env\"; "
             "if [ -n \"$TETHER_POLICY\" ]; then cat \"$TETHER_POLICY\" > \"$M/policy\"; fi",
             0755);
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID1, "p1"), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_string_equal(f->results[0].detail, "no application deployments; 1 hook ran");
        env = read_text(env_path);
        assert_non_null(env);
        assert_non_null(strstr(env, "TETHER_POLICY=\n"));
        assert_non_null(strstr(env, "TETHER_TASK_GUID=11111111-1111-4111-8111-111111111111\n"));
        assert_non_null(strstr(env, "TETHER_TASK_PARAM=p1\n"));
        free(env);

        /* With a machine policy: applications first, then the hooks, which
         * see the policy; a failing hook and a skipped one are named. */
        answer_set(f, &f->machine, TETHER_POLICY_NEW,
                   make_policy(NULL, PID_A, "2026-11-21T10:00:00Z",
                               "<Applications><Application ID=\"base\"><Intent>Required</Intent>"
                               "<Detect>echo app >> \"$TETHER_STATE_DIR/../marks/order\"</Detect>"
                               "<Install>false</Install></Application></Applications>"));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 1);
        hook(f, "app-evaluation", "20-fails", "echo 20 >> \"$M/order\"; echo 'no licence' >&2; exit 4",
             0755);
        hook(f, "app-evaluation", "30-unsafe", "echo 30 >> \"$M/order\"", 0755);
        snprintf(path, sizeof(path), "%s/app-evaluation/30-unsafe", f->cycles);
        assert_int_equal(chmod(path, 0777), 0);
        assert_int_equal(unlink(order_path), 0);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_APP_EVALUATION, GUID2, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        order = read_text(order_path);
        assert_string_equal(order, "app\n10 app-evaluation\n20\n");
        assert_int_equal(f->results[2].rc, 2);
        assert_string_equal(f->results[2].detail, "base: compliant; skipped: 30-unsafe (writable by group "
                                                  "or others); hook 20-fails failed (exit 4): no licence");
        env = read_text(env_path);
        assert_non_null(env);
        /* The verified bytes of the machine policy, on fd 3. */
        assert_non_null(strstr(env, "TETHER_POLICY=/dev/fd/3\n"));
        policy = read_text(policy_path);
        assert_non_null(policy);
        assert_non_null(strstr(policy, "<Application ID=\"base\">"));
}

static void copy_file(const char *from, const char *to, mode_t mode) {
        _cleanup_(freep) char *text = read_text(from);

        assert_non_null(text);
        write_file(to, text, mode);
}

static void test_shipped_examples(void **state) {
        struct fx *f = *state;
        _cleanup_(freep) char *src = NULL, *dst = NULL, *body = NULL;
        struct policy *p = NULL;
        uint8_t *sig = NULL;
        size_t sig_len = 0;
        char reason[256] = "";

        /* conf/policies/machine.xml is valid, with its two applications. */
        assert_true(asprintf(&src, "%s/conf/policies/machine.xml", TETHER_SOURCE_DIR) > 0);
        body = read_text(src);
        assert_non_null(body);
        assert_int_equal(tether_sign(f->key, TETHER_SIG_TYPE_POLICY, (const uint8_t *)body, strlen(body),
                                     &sig, &sig_len),
                         0);
        assert_int_equal(policy_verify_parse(f->key, (const uint8_t *)body, strlen(body), sig, sig_len, NULL,
                                             &p, reason, sizeof(reason)),
                         0);
        assert_int_equal(p->n_apps, 2);
        assert_string_equal(p->apps[0].id, "hello");
        assert_int_equal(p->apps[0].intent, POLICY_INTENT_REQUIRED);
        assert_string_equal(p->apps[1].id, "cowsay");
        assert_int_equal(p->apps[1].intent, POLICY_INTENT_UNINSTALL);
        assert_int_equal(p->interval_sec[TETHER_TASK_APP_EVALUATION], 86400);
        p = policy_free(p);
        /* The same bytes as someone's user policy: refused. */
        assert_int_equal(policy_verify_parse(f->key, (const uint8_t *)body, strlen(body), sig, sig_len,
                                             "demo", &p, reason, sizeof(reason)),
                         -EBADMSG);
        free(sig);
        free(body);
        free(src);

        assert_true(asprintf(&src, "%s/conf/policies/users/demo.xml", TETHER_SOURCE_DIR) > 0);
        body = read_text(src);
        assert_non_null(body);
        assert_int_equal(tether_sign(f->key, TETHER_SIG_TYPE_POLICY, (const uint8_t *)body, strlen(body),
                                     &sig, &sig_len),
                         0);
        assert_int_equal(policy_verify_parse(f->key, (const uint8_t *)body, strlen(body), sig, sig_len,
                                             "demo", &p, reason, sizeof(reason)),
                         0);
        p = policy_free(p);
        free(sig);
        free(src);

        /* The example machine-policy hook, run by the scheduler on it. */
        hook(f, "machine-policy", "00-placeholder", "true", 0755);
        assert_true(asprintf(&src, "%s/conf/cycles.d/machine-policy/10-log-policy", TETHER_SOURCE_DIR) > 0);
        assert_true(asprintf(&dst, "%s/machine-policy/10-log-policy", f->cycles) > 0);
        copy_file(src, dst, 0755);
        free(body);
        free(src);
        assert_true(asprintf(&src, "%s/conf/policies/machine.xml", TETHER_SOURCE_DIR) > 0);
        body = read_text(src);
        fx_start(f);
        /* With no policy, the hook says so and succeeds. */
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        assert_string_equal(f->last_output, "machine policy: none for this device\n");

        answer_set(f, &f->machine, TETHER_POLICY_NEW, strdup(body));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, GUID1, NULL), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 1);
        assert_string_equal(f->last_output, "machine policy 6B1E2C4A-3F5D-4E7A-9C8B-1D2E3F4A5B6C in effect "
                                            "(task 11111111-1111-4111-8111-111111111111)\n");

        /* A 404 leaves it in effect. */
        answer_set(f, &f->machine, TETHER_POLICY_NONE, NULL);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_MACHINE_POLICY, NULL, NULL), 0);
        run_until_results(f, 3, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[2].rc, 1);
        assert_string_equal(
                f->last_output,
                "machine policy 6B1E2C4A-3F5D-4E7A-9C8B-1D2E3F4A5B6C in effect (task periodic)\n");
}

static void test_user_hook_without_policy(void **state) {
        struct fx *f = *state;
        char out[] = "/tmp/tether-sched-out-XXXXXX";
        char path[PATH_MAX];
        _cleanup_(freep) char *script = NULL, *seen = NULL, *src = NULL, *dst = NULL;

        if (geteuid() != 0) {
                print_message("skipped: needs root (the hook drops to user nobody)\n");
                skip();
        }
        assert_non_null(mkdtemp(out));
        assert_int_equal(chmod(out, 0777), 0);
        assert_true(asprintf(&script, "echo \"[$TETHER_POLICY]\" > '%s/seen'", out) > 0);
        hook(f, "user-policy", "10-seen", script, 0755);
        /* And the shipped example user hook, which must cope too. */
        assert_true(asprintf(&src, "%s/conf/cycles.d/user-policy/10-log-user", TETHER_SOURCE_DIR) > 0);
        assert_true(asprintf(&dst, "%s/user-policy/20-log-user", f->cycles) > 0);
        copy_file(src, dst, 0755);
        f->user.result = TETHER_POLICY_NONE;
        f->uids[0] = 65534;
        f->n_uids = 1;
        fx_start(f);
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID1, "nobody"), 0);
        run_until_results(f, 1, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[0].rc, 1);
        snprintf(path, sizeof(path), "%s/seen", out);
        seen = read_text(path);
        assert_non_null(seen);
        assert_string_equal(seen, "[]\n");
        assert_string_equal(f->last_output, "user policy for nobody: none\n");

        /* With a policy, the example hook reads it through fd 3. */
        answer_set(f, &f->user, TETHER_POLICY_NEW,
                   make_policy("nobody", PID_B, "2026-11-21T10:00:00Z", NULL));
        assert_int_equal(tether_scheduler_submit(f->s, TETHER_TASK_USER_POLICY, GUID2, "nobody"), 0);
        run_until_results(f, 2, 10 * USEC_PER_SEC);
        assert_int_equal(f->results[1].rc, 1);
        assert_string_equal(
                f->last_output,
                "user policy BBBBBBBB-0000-4000-8000-000000000002 in effect for nobody (uid 65534)\n");
        snprintf(path, sizeof(path), "rm -rf '%s'", out);
        assert_int_equal(system(path), 0);
}

int main(void) {
        sigset_t mask;

        /* The documented precondition for the scheduler's child sources. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_machine_policy_env_scrubbed, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_tampered_policy_rejected_old_kept, fx_setup,
                                                fx_teardown),
                cmocka_unit_test_setup_teardown(test_invalid_policies_rejected, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_policy_none_and_error, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_rollback_floor, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_pending_bounded, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_run_parts_filtering, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_coalescing_and_order, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_time_limit_kills_process_group, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_output_cap, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_output_cap_counts, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_app_evaluation, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_app_evaluation_compliant_and_cycle_limit, fx_setup,
                                                fx_teardown),
                cmocka_unit_test_setup_teardown(test_user_policy_runs_as_user, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_user_policy_invalid_task, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_cancel_all, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_detail_truncated, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_periodic, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_sigchld_not_blocked, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_policy_wait_timeout_and_cancel, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_user_policy_applications, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_app_evaluation_hooks, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_shipped_examples, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_user_hook_without_policy, fx_setup, fx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
