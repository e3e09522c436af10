/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The root half (agent/schedd.c) against a channel process played by the
 * test over the privsep socketpair (issue 10, low): RUNs that come before
 * the site key is known are held up to a bound, and the rest are refused
 * with ReturnCode 2 and a reason, not queued without end.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "agent/config.h"
#include "agent/privsep.h"
#include "agent/schedd.h"

static void test_runs_before_site_key_bounded(void **state) {
        struct tether_config config = {0};
        sd_event *event = NULL;
        struct schedd *s = NULL;
        uint8_t *buf = NULL, *in = malloc(PRIV_MSG_MAX);
        size_t len;
        int sp[2];
        unsigned sent = 100, refused = 0;

        assert_non_null(in);
        /* No site key, no fingerprint, no TOFU: nothing can start yet. */
        config.state_dir = (char *)"/nonexistent/state";
        config.cycles_dir = (char *)"/nonexistent/cycles.d";
        assert_int_equal(priv_socketpair(sp), 0);
        assert_int_equal(sd_event_new(&event), 0);
        assert_int_equal(schedd_new(event, &config, sp[0], &s), 0);
        for (unsigned i = 0; i < sent; i++) {
                char guid[TETHER_GUID_LEN];
                snprintf(guid, sizeof(guid), "11111111-1111-4111-8111-%012u", i);
                assert_int_equal(priv_build_run(1 + i % 3, guid, "", &buf, &len), 0);
                assert_int_equal(priv_send(sp[1], buf, len), 0);
                free(buf);
                while (sd_event_run(event, 0) > 0)
                        ;
        }
        for (;;) {
                struct priv_msg m;
                ssize_t k = recv(sp[1], in, PRIV_MSG_MAX, MSG_DONTWAIT);
                if (k < 0)
                        break;
                assert_int_equal(priv_msg_check(PRIV_SIDE_CHANNEL, in, (size_t)k, &m), 0);
                assert_int_equal(m.type, PRIV_DONE);
                assert_int_equal(m.done.return_code, 2);
                assert_int_equal(m.data_len, strlen("too many requests waiting for the site key"));
                assert_memory_equal(m.data, "too many requests waiting for the site key", m.data_len);
                refused++;
        }
        /* 64 held for the site key, the rest answered at once. */
        assert_int_equal(refused, sent - 64);
        schedd_free(s);
        close(sp[1]);
        sd_event_unref(event);
        free(in);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_runs_before_site_key_bounded),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
