/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/privsep.h"

#define GUID "A43DD1B3-A006-4604-B012-5529380B3B6F"

static void set_len(uint8_t *buf, uint32_t len) {
        memcpy(buf + offsetof(struct priv_hdr, len), &len, sizeof(len));
}

static void test_run_round_trip(void **state) {
        uint8_t *buf = NULL;
        size_t len;
        struct priv_msg m;

        assert_int_equal(priv_build_run(2, GUID, "alice", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_int_equal(m.type, PRIV_RUN);
        assert_int_equal(m.run.cycle, 2);
        assert_string_equal(m.run.task_guid, GUID);
        assert_int_equal(m.data_len, 5);
        assert_memory_equal(m.data, "alice", 5);
        /* The channel side never accepts RUN. */
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), -EBADMSG);
        /* Any size but the exact one is refused. */
        for (size_t cut = 0; cut < len; cut++)
                assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, cut, &m), -EBADMSG);
        /* Header length that lies about the packet. */
        set_len(buf, (uint32_t)len + 1);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);

        /* Packet longer than announced (one stray byte after the param). */
        assert_int_equal(priv_build_run(1, "", "", &buf, &len), 0);
        uint8_t *big = calloc(1, len + 1);
        memcpy(big, buf, len);
        set_len(big, (uint32_t)len + 1);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, big, len + 1, &m), -EBADMSG);
        free(big);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_string_equal(m.run.task_guid, "");
        free(buf);
}

static void test_run_bad_fields(void **state) {
        uint8_t *buf = NULL;
        size_t len;
        struct priv_msg m;
        struct priv_run run;

        /* Unknown cycle. */
        assert_int_equal(priv_build_run(4, GUID, "", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        assert_int_equal(priv_build_run(0, GUID, "", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        /* Malformed GUID. */
        assert_int_equal(priv_build_run(1, "a43dd1b3-a006-4604-b012-5529380b3b6f", "", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        /* GUID without its terminator. */
        assert_int_equal(priv_build_run(1, GUID, "", &buf, &len), 0);
        memcpy(&run, buf + sizeof(struct priv_hdr), sizeof(run));
        memset(run.task_guid, 'A', sizeof(run.task_guid));
        memcpy(buf + sizeof(struct priv_hdr), &run, sizeof(run));
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        /* param_len that does not add up. */
        assert_int_equal(priv_build_run(1, GUID, "abc", &buf, &len), 0);
        memcpy(&run, buf + sizeof(struct priv_hdr), sizeof(run));
        run.param_len = 2;
        memcpy(buf + sizeof(struct priv_hdr), &run, sizeof(run));
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        run.param_len = UINT32_MAX;
        memcpy(buf + sizeof(struct priv_hdr), &run, sizeof(run));
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
}

static void test_done_and_direction(void **state) {
        uint8_t *buf = NULL;
        size_t len;
        struct priv_msg m;

        assert_int_equal(priv_build_done(3, GUID, 1, "app1: compliant", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), 0);
        assert_int_equal(m.done.return_code, 1);
        assert_int_equal(m.data_len, strlen("app1: compliant"));
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        assert_int_equal(priv_build_done(3, GUID, 8, "", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), -EBADMSG);
        free(buf);
}

static void test_policy(void **state) {
        uint8_t *buf = NULL, sig[70];
        size_t len;
        struct priv_msg m;
        const char *body = "<Policy/>";

        memset(sig, 7, sizeof(sig));
        assert_int_equal(priv_build_policy("bob", 0, 0, (const uint8_t *)body, strlen(body), sig,
                                           sizeof(sig), &buf, &len),
                         0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_string_equal(m.policy.user, "bob");
        assert_int_equal(m.data_len, strlen(body));
        assert_int_equal(m.data2_len, sizeof(sig));
        assert_memory_equal(m.data2, sig, sizeof(sig));
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), -EBADMSG);
        for (size_t cut = 0; cut < len; cut++)
                assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, cut, &m), -EBADMSG);
        free(buf);
        /* A new policy without a signature is refused. */
        assert_int_equal(
                priv_build_policy("", 0, 0, (const uint8_t *)body, strlen(body), NULL, 0, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        /* UNCHANGED carries nothing. */
        assert_int_equal(priv_build_policy("", 1, 0, NULL, 0, NULL, 0, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        free(buf);
        assert_int_equal(priv_build_policy("", 9, 0, NULL, 0, NULL, 0, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        /* The error is a negative errno: INT32_MIN (whose abs() is
         * undefined in the root half) and positive values are refused. */
        const int32_t errors[] = {INT32_MIN, -4096, 1, INT32_MAX};
        for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
                assert_int_equal(priv_build_policy("", 3, errors[i], NULL, 0, NULL, 0, &buf, &len), 0);
                assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
                free(buf);
        }
        assert_int_equal(priv_build_policy("", 3, -ECONNREFUSED, NULL, 0, NULL, 0, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_int_equal(m.policy.error, -ECONNREFUSED);
        free(buf);
        /* POLICY_REQUEST goes the other way. */
        assert_int_equal(priv_build_policy_request("alice", &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), 0);
        assert_string_equal(m.policy_request.user, "alice");
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len - 1, &m), -EBADMSG);
        free(buf);
}

static void test_ping_status_key_and_junk(void **state) {
        uint8_t *buf = NULL, junk[64];
        size_t len;
        struct priv_msg m;
        struct priv_hdr hdr;

        assert_int_equal(priv_build_ping(PRIV_PING, 42, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), 0);
        assert_true(m.ping.seq == 42);
        free(buf);
        assert_int_equal(priv_build_ping(PRIV_RUN, 1, &buf, &len), -EINVAL);

        assert_int_equal(priv_build_status("Connected to mp:10123 (tcp), 0 responses queued", &buf, &len),
                         0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        free(buf);
        assert_int_equal(priv_build_status("two\nlines", &buf, &len), -EINVAL);

        assert_int_equal(priv_build_site_key((const uint8_t *)"der", 3, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), -EBADMSG);
        free(buf);
        assert_int_equal(priv_build_site_key(NULL, 0, &buf, &len), -EMSGSIZE);

        /* SITE_CHAIN: channel to scheduler only, exact length, no NUL. */
        assert_int_equal(priv_build_site_chain("2 x y z 0\n", 10, &buf, &len), 0);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), 0);
        assert_int_equal(m.type, PRIV_SITE_CHAIN);
        assert_int_equal(m.data_len, 10);
        assert_memory_equal(m.data, "2 x y z 0\n", 10);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, buf, len, &m), -EBADMSG);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len - 1, &m), -EBADMSG);
        buf[len - 1] = 0;
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, buf, len, &m), -EBADMSG);
        free(buf);
        assert_int_equal(priv_build_site_chain("", 0, &buf, &len), -EMSGSIZE);
        assert_int_equal(priv_build_site_chain("x", PRIV_CHAIN_MAX + 1, &buf, &len), -EMSGSIZE);

        /* Unknown types and short headers. */
        memset(junk, 0, sizeof(junk));
        hdr.type = 99;
        hdr.len = sizeof(junk);
        memcpy(junk, &hdr, sizeof(hdr));
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, junk, sizeof(junk), &m), -EBADMSG);
        hdr.type = 0;
        memcpy(junk, &hdr, sizeof(hdr));
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, junk, sizeof(junk), &m), -EBADMSG);
        assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, junk, 3, &m), -EBADMSG);
}

static void test_socketpair_carries_big_policy(void **state) {
        int fds[2];
        size_t body_len = 512 * 1024, len;
        uint8_t *body = malloc(body_len), *buf = NULL, *rx = malloc(PRIV_MSG_MAX), sig[64] = {1};
        struct priv_msg m;
        ssize_t k;

        assert_non_null(body);
        memset(body, 'x', body_len);
        assert_int_equal(priv_socketpair(fds), 0);
        assert_int_equal(priv_build_policy("", 0, 0, body, body_len, sig, sizeof(sig), &buf, &len), 0);
        assert_int_equal(priv_send(fds[0], buf, len), 0);
        k = recv(fds[1], rx, PRIV_MSG_MAX, 0);
        assert_int_equal(k, (ssize_t)len);
        assert_int_equal(priv_msg_check(PRIV_SIDE_SCHEDULER, rx, (size_t)k, &m), 0);
        assert_int_equal(m.data_len, body_len);
        free(buf);
        free(body);
        free(rx);
        close(fds[0]);
        close(fds[1]);
}

/* Random packets and bit-flipped valid ones: never a crash, never an
 * out-of-bounds read (ASan), and a packet that passes is self-consistent. */
static void test_random_and_mutated_packets(void **state) {
        uint8_t *valid[6] = {NULL}, buf[512];
        size_t valid_len[6];
        struct priv_msg m;
        uint64_t x = 0x9E3779B97F4A7C15ULL;

        assert_int_equal(priv_build_run(1, GUID, "param", &valid[0], &valid_len[0]), 0);
        assert_int_equal(priv_build_done(2, GUID, 1, "detail", &valid[1], &valid_len[1]), 0);
        assert_int_equal(priv_build_policy_request("u", &valid[2], &valid_len[2]), 0);
        assert_int_equal(priv_build_policy("u", 0, 0, (const uint8_t *)"<P/>", 4, (const uint8_t *)"sig", 3,
                                           &valid[3], &valid_len[3]),
                         0);
        assert_int_equal(priv_build_site_key((const uint8_t *)"key", 3, &valid[4], &valid_len[4]), 0);
        assert_int_equal(priv_build_status("status", &valid[5], &valid_len[5]), 0);

        for (unsigned i = 0; i < 200000; i++) {
                size_t len;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i % 2) {
                        size_t k = (size_t)(x % 6);
                        len = valid_len[k];
                        assert_true(len <= sizeof(buf));
                        memcpy(buf, valid[k], len);
                        buf[(x >> 8) % len] ^= (uint8_t)(1u << ((x >> 32) % 8));
                } else {
                        len = (size_t)(x % sizeof(buf));
                        for (size_t j = 0; j < len; j++)
                                buf[j] = (uint8_t)(x >> (j % 56));
                        if (len >= sizeof(struct priv_hdr)) {
                                struct priv_hdr h = {.type = (uint32_t)((x >> 3) % (PRIV_TYPE_MAX + 1)),
                                                     .len = (uint32_t)len};
                                memcpy(buf, &h, sizeof(h));
                        }
                }
                for (int side = 0; side < 2; side++) {
                        if (priv_msg_check((enum priv_side)side, buf, len, &m) < 0)
                                continue;
                        /* Whatever passed points inside the packet. */
                        assert_true(m.data_len <= len);
                        if (m.data_len)
                                assert_true(m.data >= buf && m.data + m.data_len <= buf + len);
                        if (m.data2_len)
                                assert_true(m.data2 >= buf && m.data2 + m.data2_len <= buf + len);
                }
        }
        for (size_t k = 0; k < 6; k++)
                free(valid[k]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_run_round_trip),
                cmocka_unit_test(test_run_bad_fields),
                cmocka_unit_test(test_done_and_direction),
                cmocka_unit_test(test_policy),
                cmocka_unit_test(test_ping_status_key_and_junk),
                cmocka_unit_test(test_socketpair_carries_big_policy),
                cmocka_unit_test(test_random_and_mutated_packets),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
