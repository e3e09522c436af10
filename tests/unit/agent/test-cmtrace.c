/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/cmtrace.h"
#include "common/log.h"

struct fixture {
        char dir[256];
        char path[PATH_MAX];
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-cmtrace.XXXXXX");
        if (!mkdtemp(f->dir)) {
                free(f);
                return -1;
        }
        snprintf(f->path, sizeof(f->path), "%s/tetherd.log", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[PATH_MAX + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

/* Reads a whole file into a NUL-terminated buffer that the caller frees. */
static char *slurp(const char *path) {
        FILE *fp = fopen(path, "re");
        char *buf;
        long size;

        assert_non_null(fp);
        assert_int_equal(fseek(fp, 0, SEEK_END), 0);
        size = ftell(fp);
        assert_true(size >= 0);
        rewind(fp);
        buf = malloc((size_t)size + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
        buf[size] = '\0';
        fclose(fp);
        return buf;
}

static size_t count_lines(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                if (*s == '\n')
                        n++;
        return n;
}

static off_t file_size(const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return -1;
        return st.st_size;
}

/* Checks one line against the CMTrace shape, character class by character
 * class, and returns its type attribute. */
static int check_line(const char *line, const char *expected_message) {
        const char *p = line, *q;
        size_t mlen = strlen(expected_message);
        char tid[32];
        int i;

        assert_true(strncmp(p, "<![LOG[", 7) == 0);
        p += 7;
        assert_memory_equal(p, expected_message, mlen);
        p += mlen;
        assert_true(strncmp(p, "]LOG]!><time=\"", 14) == 0);
        p += 14;
        /* HH:MM:SS.mmm+000 */
        for (i = 0; i < 12; i++) {
                if (i == 2 || i == 5)
                        assert_int_equal(p[i], ':');
                else if (i == 8)
                        assert_int_equal(p[i], '.');
                else
                        assert_true(p[i] >= '0' && p[i] <= '9');
        }
        p += 12;
        assert_true(strncmp(p, "+000\" date=\"", 12) == 0);
        p += 12;
        /* MM-DD-YYYY */
        for (i = 0; i < 10; i++) {
                if (i == 2 || i == 5)
                        assert_int_equal(p[i], '-');
                else
                        assert_true(p[i] >= '0' && p[i] <= '9');
        }
        assert_true(p[0] == '0' || p[0] == '1'); /* month, not day, first */
        p += 10;
        assert_true(strncmp(p, "\" component=\"BgbAgent\" context=\"\" type=\"", 40) == 0);
        p += 40;
        i = *p - '0';
        assert_true(i >= 1 && i <= 3);
        p++;
        assert_true(strncmp(p, "\" thread=\"", 10) == 0);
        p += 10;
        q = strchr(p, '"');
        assert_non_null(q);
        assert_true(q > p && (size_t)(q - p) < sizeof(tid));
        snprintf(tid, sizeof(tid), "%ld", (long)gettid());
        assert_memory_equal(p, tid, (size_t)(q - p));
        assert_true(strncmp(q, "\" file=\"\">\n", 11) == 0);
        return i;
}

static void test_format_and_types(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        _cleanup_(freep) char *text = NULL;
        const char *line;
        const char *const fields[] = {"PUSH_ID=7", "TASK_GUID=A43DD1B3-A006-4604-B012-5529380B3B6F", NULL};
        const char *recv = "Receive task from server with pushid=7, taskid=8, "
                           "taskguid=A43DD1B3-A006-4604-B012-5529380B3B6F, tasktype=1 and taskParam=";

        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        cmtrace_log_sink(LOG_INFO, recv, fields, log);
        cmtrace_log_sink(LOG_WARNING, "Clock skew of 93 s with the management point", NULL, log);
        cmtrace_log_sink(LOG_ERR, "PUSH signature did not verify", NULL, log);
        cmtrace_log_sink(LOG_CRIT, "crit", NULL, log);
        cmtrace_log_sink(LOG_DEBUG, "debug", NULL, log);
        cmtrace_log_sink(LOG_NOTICE, "", NULL, log);
        assert_int_equal(cmtrace_log_dropped(log), 0);

        text = slurp(f->path);
        assert_int_equal(count_lines(text), 6);
        line = text;
        assert_int_equal(check_line(line, recv), 1);
        line = strchr(line, '\n') + 1;
        assert_int_equal(check_line(line, "Clock skew of 93 s with the management point"), 2);
        line = strchr(line, '\n') + 1;
        assert_int_equal(check_line(line, "PUSH signature did not verify"), 3);
        line = strchr(line, '\n') + 1;
        assert_int_equal(check_line(line, "crit"), 3);
        line = strchr(line, '\n') + 1;
        assert_int_equal(check_line(line, "debug"), 1);
        line = strchr(line, '\n') + 1;
        assert_int_equal(check_line(line, ""), 1);
}

/* The sink plugs into common/log.h like any other sink. */
static void test_through_log_h(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        _cleanup_(freep) char *text = NULL;

        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        log_set_sink(cmtrace_log_sink, log);
        log_set_max_level(LOG_INFO);
        log_warning("Falling back to HTTPS: port %d unreachable", 10123);
        log_debug("not written: below the maximum level");
        log_set_sink(NULL, NULL);

        text = slurp(f->path);
        assert_int_equal(count_lines(text), 1);
        assert_non_null(strstr(text, "Falling back to HTTPS: port 10123 unreachable]LOG]!>"));
        assert_non_null(strstr(text, "type=\"2\""));
}

/* A message carrying the end marker must not end the entry early. */
static void test_end_marker_defused(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        _cleanup_(freep) char *text = NULL;

        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        cmtrace_log_sink(LOG_INFO, "a]LOG]!>b]LOG]!>", NULL, log);
        text = slurp(f->path);
        assert_int_equal(check_line(text, "a]LOG] !>b]LOG] !>"), 1);
        /* Exactly one real end marker on the line. */
        assert_non_null(strstr(text, "]LOG]!>"));
        assert_null(strstr(strstr(text, "]LOG]!>") + 1, "]LOG]!>"));
}

static void test_rotation_lo_(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        char rotated[PATH_MAX];
        const uint64_t max = 1024;
        int i;

        snprintf(rotated, sizeof(rotated), "%s/tetherd.lo_", f->dir);
        assert_int_equal(cmtrace_log_open(f->path, max, &log), 0);
        for (i = 0; i < 40; i++)
                cmtrace_log_sink(LOG_INFO, "Send Task response message <BgbResponseMessage/> successfully.",
                                 NULL, log);
        assert_int_equal(cmtrace_log_dropped(log), 0);
        /* Both files exist, neither is past the limit, and whole lines were
         * kept: every file ends with a newline. */
        assert_true(file_size(rotated) > 0);
        assert_true(file_size(rotated) <= (off_t)max);
        assert_true(file_size(f->path) > 0);
        assert_true(file_size(f->path) <= (off_t)max);
        {
                _cleanup_(freep) char *a = slurp(rotated);
                _cleanup_(freep) char *b = slurp(f->path);

                assert_int_equal(a[strlen(a) - 1], '\n');
                assert_int_equal(b[strlen(b) - 1], '\n');
                assert_true(strncmp(a, "<![LOG[", 7) == 0);
                assert_true(strncmp(b, "<![LOG[", 7) == 0);
        }
}

static void test_rotation_other_name(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        char path[PATH_MAX], rotated[PATH_MAX];
        int i;

        snprintf(path, sizeof(path), "%s/agent.trace", f->dir);
        snprintf(rotated, sizeof(rotated), "%s/agent.trace.1", f->dir);
        assert_int_equal(cmtrace_log_open(path, 512, &log), 0);
        for (i = 0; i < 10; i++)
                cmtrace_log_sink(LOG_INFO, "line", NULL, log);
        assert_true(file_size(rotated) > 0);
        assert_true(file_size(path) <= 512);
}

/* A single line bigger than the limit is still written whole. */
static void test_oversized_line(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        char big[600];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(cmtrace_log_open(f->path, 256, &log), 0);
        cmtrace_log_sink(LOG_INFO, big, NULL, log);
        assert_true(file_size(f->path) > 600);
        cmtrace_log_sink(LOG_INFO, "next", NULL, log);
        assert_true(file_size(f->path) < 256);
        assert_int_equal(cmtrace_log_dropped(log), 0);
}

/* Someone else (logrotate, the other tetherd process) moved the file away:
 * the sink reopens the path instead of writing into the moved file. */
static void test_reopen_after_external_move(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        _cleanup_(freep) char *text = NULL;
        char moved[PATH_MAX];

        snprintf(moved, sizeof(moved), "%s/moved.log", f->dir);
        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        cmtrace_log_sink(LOG_INFO, "before", NULL, log);
        assert_int_equal(rename(f->path, moved), 0);
        cmtrace_log_sink(LOG_INFO, "after", NULL, log);
        text = slurp(f->path);
        assert_int_equal(count_lines(text), 1);
        assert_non_null(strstr(text, "[after]"));
}

/* Two writers on one file, as the two tetherd processes are: rotation by one
 * is seen by the other, and no line is lost or torn. */
static void test_two_writers(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *a = NULL;
        _cleanup_(cmtrace_log_freep) cmtrace_log *b = NULL;
        char rotated[PATH_MAX];
        int i;

        snprintf(rotated, sizeof(rotated), "%s/tetherd.lo_", f->dir);
        assert_int_equal(cmtrace_log_open(f->path, 4096, &a), 0);
        assert_int_equal(cmtrace_log_open(f->path, 4096, &b), 0);
        for (i = 0; i < 20; i++) {
                cmtrace_log_sink(LOG_INFO, "from a", NULL, a);
                cmtrace_log_sink(LOG_INFO, "from b", NULL, b);
        }
        {
                _cleanup_(freep) char *cur = slurp(f->path);
                _cleanup_(freep) char *old = file_size(rotated) >= 0 ? slurp(rotated) : strdup("");

                assert_true(file_size(f->path) <= 4096);
                /* 40 lines of about 150 bytes overflow 4 KiB once: whatever
                 * was rotated plus what is current is every line. */
                assert_true(file_size(rotated) > 0);
                assert_int_equal(count_lines(cur) + count_lines(old), 40);
        }
}

static void test_open_fails(void **state) {
        struct fixture *f = *state;
        cmtrace_log *log = NULL;
        char path[PATH_MAX];

        assert_int_equal(cmtrace_log_open("", 0, &log), -EINVAL);
        assert_int_equal(cmtrace_log_open(NULL, 0, &log), -EINVAL);
        snprintf(path, sizeof(path), "%s/no/such/dir/x.log", f->dir);
        assert_int_equal(cmtrace_log_open(path, 0, &log), -ENOENT);
        /* A symlink at the log path is refused, not followed. */
        snprintf(path, sizeof(path), "%s/link.log", f->dir);
        assert_int_equal(symlink("/etc/passwd", path), 0);
        assert_int_equal(cmtrace_log_open(path, 0, &log), -ELOOP);
        assert_null(log);
        /* NULL userdata and NULL objects are harmless. */
        cmtrace_log_sink(LOG_INFO, "nowhere", NULL, NULL);
        assert_null(cmtrace_log_free(NULL));
        assert_int_equal(cmtrace_log_dropped(NULL), 0);
}

/* Issue 10: the log's directory may belong to the channel user, who could
 * plant a hard link to a root file or a FIFO under the log's name: root
 * must write to neither. */
static void test_refuses_planted_files(void **state) {
        struct fixture *f = *state;
        cmtrace_log *log = NULL;
        char victim[PATH_MAX];
        struct stat st;
        int fd;

        snprintf(victim, sizeof(victim), "%s/victim", f->dir);
        fd = open(victim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "root\n", 5), 5);
        close(fd);
        assert_int_equal(link(victim, f->path), 0);
        assert_int_equal(cmtrace_log_open(f->path, 0, &log), -EPERM);
        assert_null(log);
        assert_int_equal(stat(victim, &st), 0);
        assert_int_equal(st.st_size, 5);
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(mkfifo(f->path, 0600), 0);
        assert_true(cmtrace_log_open(f->path, 0, &log) < 0); /* no reader: ENXIO, never a hang */
        assert_null(log);
        assert_int_equal(unlink(f->path), 0);
        /* Replaced by a hard link after the open: the line is dropped. */
        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(link(victim, f->path), 0);
        cmtrace_log_sink(LOG_INFO, "not into the victim", NULL, log);
        assert_int_equal(cmtrace_log_dropped(log), 1);
        assert_int_equal(stat(victim, &st), 0);
        assert_int_equal(st.st_size, 5);
        cmtrace_log_free(log);
}

/* When the file cannot be written any more, lines are counted as dropped
 * (the sink has nowhere to report them). */
static void test_dropped_when_unwritable(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        char cmd[PATH_MAX + 32];

        assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
        /* Remove the file and its directory: the reopen must fail. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        cmtrace_log_sink(LOG_ERR, "lost", NULL, log);
        assert_int_equal(cmtrace_log_dropped(log), 1);
        assert_int_equal(mkdir(f->dir, 0700), 0);
        cmtrace_log_sink(LOG_ERR, "back", NULL, log);
        assert_int_equal(cmtrace_log_dropped(log), 1);
        assert_true(file_size(f->path) > 0);
}

/* Run as root, a new log file takes the owner of its directory, so that the
 * channel process (user tether) can reopen it after the root process has
 * rotated it. */
static void test_owner_follows_directory(void **state) {
        struct fixture *f = *state;
        _cleanup_(cmtrace_log_freep) cmtrace_log *log = NULL;
        struct stat st;

        if (geteuid() != 0) {
                /* Not root: files are ours anyway; nothing to check. */
                assert_int_equal(cmtrace_log_open(f->path, 0, &log), 0);
                return;
        }
        assert_int_equal(chown(f->dir, 65534, 65534), 0);
        assert_int_equal(cmtrace_log_open(f->path, 256, &log), 0);
        cmtrace_log_sink(LOG_INFO, "first", NULL, log);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 65534);
        assert_int_equal(st.st_gid, 65534);
        assert_int_equal(st.st_mode & 07777, 0640);
        /* The file made by a rotation too. */
        for (int i = 0; i < 5; i++)
                cmtrace_log_sink(LOG_INFO, "filling the file past its limit", NULL, log);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 65534);
        /* In a root-owned directory the file stays root's. */
        assert_int_equal(chown(f->dir, 0, 0), 0);
        assert_int_equal(unlink(f->path), 0);
        cmtrace_log_sink(LOG_INFO, "again", NULL, log);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_format_and_types, setup, teardown),
                cmocka_unit_test_setup_teardown(test_through_log_h, setup, teardown),
                cmocka_unit_test_setup_teardown(test_end_marker_defused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rotation_lo_, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rotation_other_name, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oversized_line, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reopen_after_external_move, setup, teardown),
                cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuses_planted_files, setup, teardown),
                cmocka_unit_test_setup_teardown(test_dropped_when_unwritable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_owner_follows_directory, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
