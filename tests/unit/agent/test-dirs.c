/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent/dirs.c and the control socket's birth (issue 10, root half): root
 * changes nothing through a link the channel user planted, keeps its own
 * state only where nobody else can rename it, and never chmods or chowns
 * the control socket by path. The ownership checks need root; without it
 * they are skipped (and say so).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
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

#include "agent/config.h"
#include "agent/control.h"
#include "agent/dirs.h"

#define NOBODY 65534

struct fixture {
        char dir[64];
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-dirs.XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

static void make_file(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, "x", 1), 1);
        close(fd);
}

static uid_t owner(const char *path) {
        struct stat st;

        assert_int_equal(lstat(path, &st), 0);
        return st.st_uid;
}

static void test_root_state_path(void **state) {
        struct tether_config c = {.state_dir = (char *)"/var/lib/tether/"};
        char *p = NULL;

        assert_int_equal(dirs_root_state_path(&c, &p), 0);
        /* Beside the channel's directory, never inside it (as root). */
        assert_string_equal(p, geteuid() == 0 ? "/var/lib/tether-root" : "/var/lib/tether/");
        free(p);
}

static void test_root_state_checks(void **state) {
        struct fixture *f = *state;
        char path[PATH_MAX], open_dir[256];
        struct stat st;

        if (geteuid() != 0) {
                skip();
                return;
        }
        snprintf(path, sizeof(path), "%s/state-root", f->dir);
        assert_int_equal(dirs_prepare_root_state(path), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_uid, 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        /* A wider mode is narrowed again. */
        assert_int_equal(chmod(path, 0755), 0);
        assert_int_equal(dirs_prepare_root_state(path), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        /* Made by somebody else: refused. */
        assert_int_equal(chown(path, NOBODY, NOBODY), 0);
        assert_int_equal(dirs_prepare_root_state(path), -EPERM);
        /* In a directory others can write (not sticky), or one owned by
         * another user: refused, since they could rename it. */
        snprintf(open_dir, sizeof(open_dir), "%s/open", f->dir);
        assert_int_equal(mkdir(open_dir, 0700), 0);
        assert_int_equal(chmod(open_dir, 0777), 0);
        snprintf(path, sizeof(path), "%s/open/state-root", f->dir);
        assert_int_equal(dirs_prepare_root_state(path), -EPERM);
        assert_int_equal(chmod(open_dir, 01777), 0);
        assert_int_equal(dirs_prepare_root_state(path), 0);
        assert_int_equal(chmod(open_dir, 0755), 0);
        assert_int_equal(chown(open_dir, NOBODY, NOBODY), 0);
        assert_int_equal(dirs_prepare_root_state(path), -EPERM);
        /* A symlink on the way is resolved, and where it leads is checked. */
        snprintf(path, sizeof(path), "%s/link", f->dir);
        assert_int_equal(symlink(open_dir, path), 0);
        snprintf(path, sizeof(path), "%s/link/state-root", f->dir);
        assert_int_equal(dirs_prepare_root_state(path), -EPERM);
        assert_int_equal(dirs_prepare_root_state("relative/state-root"), -EINVAL);
}

/* The hand-over of identity/, spool/ and trust/ to the channel user:
 * through descriptors, and never through a link. */
static void test_channel_handover(void **state) {
        struct fixture *f = *state;
        char state_dir[256], run_dir[256], p[PATH_MAX], victim[256], victim_dir[256];
        char cmd[PATH_MAX + 32];
        struct passwd pw = {.pw_name = (char *)"nobody", .pw_uid = NOBODY, .pw_gid = NOBODY};
        struct tether_config c = {0};

        if (geteuid() != 0) {
                skip();
                return;
        }
        snprintf(state_dir, sizeof(state_dir), "%s/state", f->dir);
        snprintf(run_dir, sizeof(run_dir), "%s/run", f->dir);
        c.state_dir = state_dir;
        c.runtime_dir = run_dir;
        assert_int_equal(dirs_prepare_channel(&c, &pw), 0);
        snprintf(p, sizeof(p), "%s/spool", state_dir);
        assert_int_equal(owner(p), NOBODY);

        /* Left by root: a file and a directory with a file in it. */
        snprintf(p, sizeof(p), "%s/spool/tasks", state_dir);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/spool/tasks/t1", state_dir);
        make_file(p);
        /* Planted: a hard link to a root file, and a symlink to a root
         * directory. */
        snprintf(victim, sizeof(victim), "%s/victim", f->dir);
        make_file(victim);
        snprintf(p, sizeof(p), "%s/identity/hardlink", state_dir);
        assert_int_equal(link(victim, p), 0);
        snprintf(victim_dir, sizeof(victim_dir), "%s/victim-dir", f->dir);
        assert_int_equal(mkdir(victim_dir, 0700), 0);
        snprintf(p, sizeof(p), "%s/victim-dir/inside", f->dir);
        make_file(p);
        snprintf(p, sizeof(p), "%s/trust/symlink", state_dir);
        assert_int_equal(symlink(victim_dir, p), 0);

        assert_int_equal(dirs_prepare_channel(&c, &pw), 0);
        snprintf(p, sizeof(p), "%s/spool/tasks", state_dir);
        assert_int_equal(owner(p), NOBODY);
        snprintf(p, sizeof(p), "%s/spool/tasks/t1", state_dir);
        assert_int_equal(owner(p), NOBODY);
        assert_int_equal(owner(victim), 0);
        assert_int_equal(owner(victim_dir), 0);
        snprintf(p, sizeof(p), "%s/victim-dir/inside", f->dir);
        assert_int_equal(owner(p), 0);

        /* spool/ itself replaced by a symlink: refused, not followed. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s/spool'", state_dir);
        assert_int_equal(system(cmd), 0);
        snprintf(p, sizeof(p), "%s/spool", state_dir);
        assert_int_equal(symlink(victim_dir, p), 0);
        assert_true(dirs_prepare_channel(&c, &pw) < 0);
        assert_int_equal(owner(victim_dir), 0);
}

/* The control socket is born 0660 in the group asked for: nothing to
 * chmod or chown by path afterwards. */
static void test_control_socket_born_right(void **state) {
        struct fixture *f = *state;
        char path[PATH_MAX];
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "%s/tetherd.sock", f->dir);
        fd = control_socket_bind(path, geteuid() == 0 ? NOBODY : (gid_t)-1);
        assert_true(fd >= 0);
        assert_int_equal(lstat(path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0660);
        assert_int_equal(st.st_uid, geteuid());
        assert_int_equal(st.st_gid, geteuid() == 0 ? NOBODY : getegid());
        close(fd);
        /* The process's own file system group is back for what follows. */
        snprintf(path, sizeof(path), "%s/after", f->dir);
        assert_int_equal(mkdir(path, 0700), 0);
        assert_int_equal(lstat(path, &st), 0);
        assert_int_equal(st.st_gid, getegid());
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_root_state_path),
                cmocka_unit_test_setup_teardown(test_root_state_checks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_channel_handover, setup, teardown),
                cmocka_unit_test_setup_teardown(test_control_socket_born_right, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
