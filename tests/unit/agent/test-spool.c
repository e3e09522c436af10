/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/fsutil.h"
#include "agent/spool.h"

#define GUID_A "A43DD1B3-A006-4604-B012-5529380B3B6F"
#define GUID_B "B43DD1B3-A006-4604-B012-5529380B3B6F"

static char dir[256];
static enum fsutil_step fail_step;
static int fail_error;

static int fault_hook(enum fsutil_step step) {
        return step == fail_step ? fail_error : 0;
}

static int setup(void **state) {
        snprintf(dir, sizeof(dir), "/tmp/test-agent-spool-XXXXXX");
        assert_non_null(mkdtemp(dir));
        fsutil_fault_hook = NULL;
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        fsutil_fault_hook = NULL;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static struct spool_task make_task(const char *guid, uint64_t push_id, char *param) {
        struct spool_task t = {0};
        snprintf(t.task_guid, sizeof(t.task_guid), "%s", guid);
        t.push_id = push_id;
        t.task_id = push_id + 1;
        t.task_type = 1;
        t.param = param;
        t.timestamp = 1700000000;
        t.expires = 1700003600;
        t.received = 1700000001;
        return t;
}

static unsigned count_entries(const char *sub) {
        char p[400];
        unsigned n = 0;
        struct dirent *de;
        snprintf(p, sizeof(p), "%s/%s", dir, sub);
        DIR *d = opendir(p);
        assert_non_null(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || (de->d_name[1] != 0 && de->d_name[1] != '.'))
                        n++;
        closedir(d);
        return n;
}

/* The cached counts agree with a fresh count from disk. */
static void check_counts(struct tether_spool *s) {
        struct tether_spool *fresh = NULL;
        struct spool_counts a, b;

        assert_int_equal(spool_count(s, &a), 0);
        assert_int_equal(spool_open(dir, &fresh, NULL), 0);
        assert_int_equal(spool_count(fresh, &b), 0);
        spool_close(fresh);
        assert_int_equal(a.tasks, b.tasks);
        assert_int_equal(a.pending_tasks, b.pending_tasks);
        assert_int_equal(a.unacked, b.unacked);
}

static void test_round_trip(void **state) {
        struct tether_spool *s = NULL;
        struct spool_task t = make_task(GUID_A, 7, "user=alice\nline two\x01"), got;
        uint8_t frame[] = {'T', 'H', 1, 5, 0, 0, 0, 0, 0, 0};
        uint8_t *f = NULL;
        size_t flen;
        uint32_t rc;
        struct spool_counts c;

        assert_int_equal(spool_open(dir, &s, NULL), 0);
        assert_false(spool_has_task(s, GUID_A));
        assert_int_equal(spool_save_task(s, &t), 0);
        assert_true(spool_has_task(s, GUID_A));
        assert_int_equal(spool_load_task(s, GUID_A, &got), 0);
        assert_string_equal(got.task_guid, GUID_A);
        assert_int_equal(got.push_id, 7);
        assert_int_equal(got.task_id, 8);
        assert_string_equal(got.param, "user=alice\nline two\x01");
        assert_int_equal(got.expires, 1700003600);
        spool_task_done(&got);

        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.pending_tasks, 1);
        assert_int_equal(c.unacked, 0);

        assert_int_equal(spool_save_response(s, GUID_A, 1, frame, sizeof(frame)), 0);
        assert_int_equal(spool_load_response(s, GUID_A, &rc, &f, &flen), 0);
        assert_int_equal(rc, 1);
        assert_memory_equal(f, frame, sizeof(frame));
        free(f);
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.pending_tasks, 0);
        assert_int_equal(c.unacked, 1);
        assert_false(spool_response_acked(s, GUID_A));
        assert_int_equal(spool_mark_acked(s, GUID_A), 0);
        assert_true(spool_response_acked(s, GUID_A));
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.unacked, 0);
        check_counts(s);
        assert_int_equal(spool_mark_acked(s, GUID_A), 0); /* twice is fine */
        check_counts(s);
        /* A new response un-acknowledges. */
        assert_int_equal(spool_save_response(s, GUID_A, 2, frame, sizeof(frame)), 0);
        check_counts(s);
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.unacked, 1);
        assert_int_equal(spool_mark_acked(s, GUID_A), 0);
        assert_int_equal(spool_mark_acked(s, GUID_B), -ENOENT);
        /* Bad names are refused, never used as paths. */
        assert_int_equal(spool_save_response(s, "../evil", 1, frame, sizeof(frame)), -EINVAL);
        t = make_task("not-a-guid", 1, "");
        assert_int_equal(spool_save_task(s, &t), -EINVAL);
        spool_close(s);

        /* It all survives a reopen. */
        assert_int_equal(spool_open(dir, &s, NULL), 0);
        assert_true(spool_has_task(s, GUID_A));
        assert_true(spool_response_acked(s, GUID_A));
        spool_close(s);
}

static void test_record_codec_rejects_damage(void **state) {
        uint8_t *rec = NULL, kind;
        const uint8_t *payload;
        size_t len, plen;

        assert_int_equal(spool_record_encode('T', (const uint8_t *)"hello", 5, &rec, &len), 0);
        assert_int_equal(spool_record_decode(rec, len, &kind, &payload, &plen), 0);
        assert_int_equal(kind, 'T');
        assert_int_equal(plen, 5);
        for (size_t cut = 0; cut < len; cut++)
                assert_int_equal(spool_record_decode(rec, cut, &kind, &payload, &plen), -EBADMSG);
        for (size_t i = 0; i < len; i++) {
                rec[i] ^= 0x10;
                assert_int_equal(spool_record_decode(rec, len, &kind, &payload, &plen), -EBADMSG);
                rec[i] ^= 0x10;
        }
        free(rec);
}

/*
 * A crash after each step of the write of a new version of a task: after
 * recovery, the spool holds either the old version or the new one, whole,
 * and no temporary file.
 */
static void crash_at_every_step(bool had_old) {
        for (enum fsutil_step step = FSUTIL_STEP_OPEN; step < FSUTIL_STEP_MAX; step++) {
                struct tether_spool *s = NULL;
                struct spool_task old = make_task(GUID_A, 1, "old"), new = make_task(GUID_A, 2, "new"), got;
                struct spool_recovery rec;
                char cmd[400];
                int r;

                snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
                assert_int_equal(system(cmd), 0);
                assert_int_equal(spool_open(dir, &s, NULL), 0);
                if (had_old)
                        assert_int_equal(spool_save_task(s, &old), 0);

                fail_step = step;
                fail_error = -ECANCELED;
                fsutil_fault_hook = fault_hook;
                r = spool_save_task(s, &new);
                fsutil_fault_hook = NULL;
                assert_int_equal(r, -ECANCELED);
                spool_close(s); /* the process is gone */

                assert_int_equal(spool_open(dir, &s, &rec), 0);
                assert_int_equal(rec.quarantined, 0);
                assert_int_equal(rec.tmp_removed, step < FSUTIL_STEP_RENAME ? 1 : 0);
                assert_int_equal(count_entries("tasks"), (had_old || step >= FSUTIL_STEP_RENAME) ? 1 : 0);
                if (step >= FSUTIL_STEP_RENAME) {
                        assert_int_equal(spool_load_task(s, GUID_A, &got), 0);
                        assert_int_equal(got.push_id, 2);
                        assert_string_equal(got.param, "new");
                        spool_task_done(&got);
                } else if (had_old) {
                        assert_int_equal(spool_load_task(s, GUID_A, &got), 0);
                        assert_int_equal(got.push_id, 1);
                        assert_string_equal(got.param, "old");
                        spool_task_done(&got);
                } else {
                        assert_false(spool_has_task(s, GUID_A));
                }
                spool_close(s);
        }
}

static void test_crash_at_every_step_new(void **state) {
        crash_at_every_step(false);
}

static void test_crash_at_every_step_replace(void **state) {
        crash_at_every_step(true);
}

/* The same for a response: after the crash, either no response (the task
 * is pending and is re-run) or the whole response (it is re-sent). */
static void test_crash_response(void **state) {
        for (enum fsutil_step step = FSUTIL_STEP_OPEN; step < FSUTIL_STEP_MAX; step++) {
                struct tether_spool *s = NULL;
                struct spool_task t = make_task(GUID_A, 1, "");
                uint8_t frame[300];
                uint8_t *f = NULL;
                size_t flen;
                uint32_t rc;
                struct spool_counts c;
                char cmd[400];

                memset(frame, 0x5a, sizeof(frame));
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
                assert_int_equal(system(cmd), 0);
                assert_int_equal(spool_open(dir, &s, NULL), 0);
                assert_int_equal(spool_save_task(s, &t), 0);
                fail_step = step;
                fail_error = -ECANCELED;
                fsutil_fault_hook = fault_hook;
                assert_int_equal(spool_save_response(s, GUID_A, 2, frame, sizeof(frame)), -ECANCELED);
                fsutil_fault_hook = NULL;
                spool_close(s);

                assert_int_equal(spool_open(dir, &s, NULL), 0);
                assert_int_equal(spool_count(s, &c), 0);
                if (step >= FSUTIL_STEP_RENAME) {
                        assert_int_equal(c.pending_tasks, 0);
                        assert_int_equal(c.unacked, 1);
                        assert_int_equal(spool_load_response(s, GUID_A, &rc, &f, &flen), 0);
                        assert_int_equal(rc, 2);
                        assert_int_equal(flen, sizeof(frame));
                        free(f);
                } else {
                        assert_int_equal(c.pending_tasks, 1);
                        assert_int_equal(c.unacked, 0);
                }
                spool_close(s);
        }
}

/* Disk full at any step before the rename: a clear error, the old record
 * intact, no temporary file left. */
static void test_disk_full(void **state) {
        int errs[] = {-ENOSPC, -EDQUOT};

        for (size_t e = 0; e < 2; e++)
                for (enum fsutil_step step = FSUTIL_STEP_OPEN; step <= FSUTIL_STEP_SYNC; step++) {
                        struct tether_spool *s = NULL;
                        struct spool_task old = make_task(GUID_A, 1, "old"),
                                          new = make_task(GUID_A, 2, "new"),
                                          other = make_task(GUID_B, 3, ""), got;
                        char cmd[400];

                        snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
                        assert_int_equal(system(cmd), 0);
                        assert_int_equal(spool_open(dir, &s, NULL), 0);
                        assert_int_equal(spool_save_task(s, &old), 0);
                        fail_step = step;
                        fail_error = errs[e];
                        fsutil_fault_hook = fault_hook;
                        assert_int_equal(spool_save_task(s, &new), errs[e]);
                        assert_int_equal(spool_save_task(s, &other), errs[e]);
                        fsutil_fault_hook = NULL;
                        assert_int_equal(count_entries("tasks"), 1);
                        assert_false(spool_has_task(s, GUID_B));
                        assert_int_equal(spool_load_task(s, GUID_A, &got), 0);
                        assert_string_equal(got.param, "old");
                        spool_task_done(&got);
                        spool_close(s);
                }
}

static void test_damaged_record_quarantined(void **state) {
        struct tether_spool *s = NULL;
        struct spool_task t = make_task(GUID_A, 1, "x");
        struct spool_recovery rec;
        char p[400];
        int fd;

        assert_int_equal(spool_open(dir, &s, NULL), 0);
        assert_int_equal(spool_save_task(s, &t), 0);
        spool_close(s);
        snprintf(p, sizeof(p), "%s/tasks/%s", dir, GUID_A);
        fd = open(p, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 12), 0);
        close(fd);
        snprintf(p, sizeof(p), "%s/tasks/%s", dir, GUID_B);
        fd = open(p, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "garbage", 7), 7);
        close(fd);

        assert_int_equal(spool_open(dir, &s, &rec), 0);
        assert_int_equal(rec.quarantined, 2);
        assert_false(spool_has_task(s, GUID_A));
        assert_int_equal(count_entries("quarantine"), 2);
        spool_close(s);
}

static int collect(struct tether_spool *s, const struct spool_task *t, void *userdata) {
        (*(int *)userdata)++;
        assert_string_equal(t->task_guid, GUID_B);
        return 0;
}

static int collect_rsp(struct tether_spool *s, const char *name, uint32_t rc, const uint8_t *frame,
                       size_t len, void *userdata) {
        (*(int *)userdata)++;
        assert_string_equal(name, GUID_A);
        return 0;
}

static void test_pending_gc_recent(void **state) {
        struct tether_spool *s = NULL;
        struct spool_task a = make_task(GUID_A, 1, ""), b = make_task(GUID_B, 2, ""), recent[4];
        uint32_t codes[4];
        uint8_t frame[4] = {1, 2, 3, 4};
        int n = 0;

        b.received = a.received + 10;
        b.expires = 2000000000;
        assert_int_equal(spool_open(dir, &s, NULL), 0);
        assert_int_equal(spool_save_task(s, &a), 0);
        assert_int_equal(spool_save_task(s, &b), 0);
        assert_int_equal(spool_save_response(s, GUID_A, 3, frame, sizeof(frame)), 0);
        assert_int_equal(spool_foreach_pending_task(s, collect, &n), 0);
        assert_int_equal(n, 1);
        n = 0;
        assert_int_equal(spool_foreach_unacked_response(s, collect_rsp, &n), 0);
        assert_int_equal(n, 1);
        check_counts(s);
        /* A response with no task (an unverified push's) and its removal. */
        assert_int_equal(spool_save_response(s, "U-X", 5, frame, sizeof(frame)), 0);
        check_counts(s);
        assert_int_equal(spool_drop_response(s, "U-X"), 0);
        check_counts(s);

        assert_int_equal(spool_recent(s, recent, codes, 4), 2);
        assert_string_equal(recent[0].task_guid, GUID_B);
        assert_int_equal(codes[0], 0);
        assert_string_equal(recent[1].task_guid, GUID_A);
        assert_int_equal(codes[1], 3);
        spool_task_done(&recent[0]);
        spool_task_done(&recent[1]);
        assert_int_equal(spool_recent(s, recent, codes, 1), 1);
        assert_string_equal(recent[0].task_guid, GUID_B);
        spool_task_done(&recent[0]);

        /* Kept until 7 days after Expires, then forgotten with its response. */
        assert_int_equal(spool_gc(s, a.expires + SPOOL_REMEMBER_SECONDS), 0);
        assert_true(spool_has_task(s, GUID_A));
        assert_int_equal(spool_gc(s, a.expires + SPOOL_REMEMBER_SECONDS + 1), 1);
        assert_false(spool_has_task(s, GUID_A));
        assert_false(spool_has_response(s, GUID_A));
        assert_true(spool_has_task(s, GUID_B));
        check_counts(s);
        /* A response without a task goes a week after it was written. */
        assert_int_equal(spool_save_response(s, "U-Y", 5, frame, sizeof(frame)), 0);
        assert_int_equal(spool_gc(s, time(NULL) + SPOOL_REMEMBER_SECONDS - 60), 0);
        assert_true(spool_has_response(s, "U-Y"));
        assert_int_equal(spool_gc(s, time(NULL) + SPOOL_REMEMBER_SECONDS + 60), 1);
        assert_false(spool_has_response(s, "U-Y"));
        check_counts(s);
        /* A pending task forgotten too. */
        assert_int_equal(spool_gc(s, b.expires + SPOOL_REMEMBER_SECONDS + 1), 1);
        check_counts(s);
        spool_close(s);
}

/* spool_make_room: by count and by bytes, oldest (write time) first, only
 * names with the prefix; the counters follow. */
static void test_make_room(void **state) {
        struct tether_spool *s = NULL;
        struct spool_counts c;
        uint8_t frame[1000];
        char name[64];
        struct timespec times[2] = {{0, UTIME_OMIT}, {0, 0}};
        char path[400];

        memset(frame, 'f', sizeof(frame));
        assert_int_equal(spool_open(dir, &s, NULL), 0);
        assert_int_equal(spool_save_response(s, GUID_A, 1, frame, sizeof(frame)), 0);
        for (int i = 0; i < 5; i++) {
                snprintf(name, sizeof(name), "U-%d", i);
                assert_int_equal(spool_save_response(s, name, 5, frame, sizeof(frame)), 0);
                /* Write times in the opposite order of the names. */
                snprintf(path, sizeof(path), "%s/responses/%s", dir, name);
                times[1].tv_sec = 1700000000 - i;
                assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
        }
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.unacked, 6);

        /* Within both bounds: nothing goes. */
        assert_int_equal(spool_make_room(s, "U-", 6, 1u << 20, 100), 0);
        /* Count: room for one more under 4 means keeping 3; the oldest are
         * U-4 and U-3. */
        assert_int_equal(spool_make_room(s, "U-", 4, 1u << 20, 100), 2);
        assert_false(spool_has_response(s, "U-4"));
        assert_false(spool_has_response(s, "U-3"));
        assert_true(spool_has_response(s, "U-2"));
        assert_true(spool_has_response(s, GUID_A)); /* other names untouched */
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.unacked, 4);
        /* Bytes: each record is a little over 1000 bytes; 2500 bytes with
         * 1000 incoming leave room for one. */
        assert_int_equal(spool_make_room(s, "U-", 100, 2500, 1000), 2);
        assert_true(spool_has_response(s, "U-0"));
        assert_false(spool_has_response(s, "U-1"));
        assert_int_equal(spool_count(s, &c), 0);
        assert_int_equal(c.unacked, 2);
        spool_close(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_record_codec_rejects_damage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_at_every_step_new, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_at_every_step_replace, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_response, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
                cmocka_unit_test_setup_teardown(test_damaged_record_quarantined, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pending_gc_recent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_make_room, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
