/* SPDX-License-Identifier: Apache-2.0 */
/* ticket.keys: created, kept, rotated (current + previous), shared by
 * nodes that read the same file, and a bad file left alone. */
#include <errno.h>
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

#include "mp/tickets.h"

#define ROTATE 1000u

struct fixture {
        char dir[64];
        char path[96];
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-mp-tickets.XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->path, sizeof(f->path), "%s/ticket.keys", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        (void)unlink(f->path);
        if (rmdir(f->dir) < 0)
                return -1;
        free(f);
        return 0;
}

static char *slurp(const char *path) {
        FILE *fp = fopen(path, "re");
        char *buf = calloc(1, 4096);

        assert_non_null(fp);
        assert_non_null(buf);
        (void)fread(buf, 1, 4095, fp);
        fclose(fp);
        return buf;
}

static void test_create_keep_rotate(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ticket_key k1[MP_TICKET_KEEP], k2[MP_TICKET_KEEP], k3[MP_TICKET_KEEP];
        struct stat st;
        size_t n = 0;

        /* none yet: one made, private to the MP's user */
        assert_int_equal(mp_tickets_refresh(f->path, 5000, ROTATE, k1, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        /* not due: the same key, as another node reading the file sees it */
        assert_int_equal(mp_tickets_refresh(f->path, 5000 + ROTATE - 1, ROTATE, k2, &n), 0);
        assert_int_equal(n, 1);
        assert_memory_equal(k1[0].bytes, k2[0].bytes, TETHER_TLS_TICKET_KEY_SIZE);

        /* due: a new current key, the old one kept second */
        assert_int_equal(mp_tickets_refresh(f->path, 5000 + ROTATE, ROTATE, k2, &n), 0);
        assert_int_equal(n, 2);
        assert_memory_not_equal(k2[0].bytes, k1[0].bytes, TETHER_TLS_TICKET_KEY_SIZE);
        assert_memory_equal(k2[1].bytes, k1[0].bytes, TETHER_TLS_TICKET_KEY_SIZE);

        /* again: only one older key is kept */
        assert_int_equal(mp_tickets_refresh(f->path, 5000 + 2 * ROTATE, ROTATE, k3, &n), 0);
        assert_int_equal(n, 2);
        assert_memory_equal(k3[1].bytes, k2[0].bytes, TETHER_TLS_TICKET_KEY_SIZE);
        assert_memory_not_equal(k3[0].bytes, k2[0].bytes, TETHER_TLS_TICKET_KEY_SIZE);
}

static void test_bad_file_left_alone(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ticket_key k[MP_TICKET_KEEP];
        static const char *const bad[] = {
                "12 abc\n", "x 00\n", "", /* filled below: one hex digit short */
        };
        char short_key[256];
        size_t n = 7;

        /* "1 " and one hex digit short of a key */
        memset(short_key, 0, sizeof(short_key));
        short_key[0] = '1';
        short_key[1] = ' ';
        memset(short_key + 2, 'a', 2 * TETHER_TLS_TICKET_KEY_SIZE - 1);
        short_key[2 + 2 * TETHER_TLS_TICKET_KEY_SIZE - 1] = '\n';
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                const char *text = bad[i][0] ? bad[i] : short_key;
                FILE *fp = fopen(f->path, "we");
                char *after;

                assert_non_null(fp);
                fputs(text, fp);
                fclose(fp);
                assert_int_equal(mp_tickets_refresh(f->path, 5000, ROTATE, k, &n), -EBADMSG);
                after = slurp(f->path);
                assert_string_equal(after, text);
                free(after);
        }
        assert_int_equal(unlink(f->path), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_keep_rotate, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_file_left_alone, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
