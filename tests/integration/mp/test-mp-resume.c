/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS session resumption on the real tether-mp (issue #16): a returning
 * device resumes with the ticket of its previous connection, also across
 * a restart (ticket.keys persists in the state directory), and the SIGNIN
 * is still verified on the resumed connection, against the certificate
 * key of the full handshake the ticket came from.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "transport/sign.h"
#include "transport/tls.h"

struct fixture {
        struct mp_server_proc p;
        struct device d, other;
        struct tether_tls_ctx *ctx; /* d's TLS client: it keeps the ticket */
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        *state = f;
        assert_int_equal(mp_proc_start(&f->p, (const char *const[]){"--keepalive", "30", NULL}), 0);
        assert_int_equal(device_new(&f->d, NULL, NULL), 0);
        assert_int_equal(device_new(&f->other, NULL, NULL), 0);
        assert_int_equal(tether_tls_client_new(f->d.cert_pem, f->d.key, NULL, f->p.tls_fingerprint, &f->ctx),
                         0);
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        tether_tls_ctx_free(f->ctx);
        device_done(&f->d);
        device_done(&f->other);
        mp_proc_cleanup(&f->p);
        free(f);
        return 0;
}

/* chan_open with the fixture's client context instead of a new one. */
static void open_with_ctx(struct fixture *f, struct chan *c) {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(f->p.tcp_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        int r, one = 1;

        memset(c, 0, sizeof(*c));
        assert_int_equal(tether_frame_decoder_new(TETHER_FRAME_DEFAULT_MAX_BODY, &c->dec), 0);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(c->fd >= 0);
        assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        assert_int_equal(fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK), 0);
        assert_int_equal(tether_tls_conn_new(f->ctx, c->fd, "127.0.0.1", &c->tls), 0);
        for (int i = 0; i < 1000; i++) {
                struct pollfd pfd = {.fd = c->fd,
                                     .events = want == TETHER_TLS_WANT_WRITE ? POLLOUT : POLLIN};

                r = tether_tls_handshake(c->tls, &want);
                if (r != 0)
                        break;
                assert_true(poll(&pfd, 1, 10000) > 0);
        }
        assert_int_equal(r, 1);
}

static void close_keeping_ctx(struct chan *c) {
        c->ctx = NULL; /* the fixture's */
        chan_close(c);
}

/* Signs in as d over a connection of d's context; returns whether the TLS
 * session was resumed. */
static bool signin_ok(struct fixture *f) {
        struct tether_msg *m = NULL;
        struct chan c;
        bool resumed;

        open_with_ctx(f, &c);
        resumed = tether_tls_conn_resumed(c.tls);
        assert_int_equal(chan_signin(&c, &f->p, &f->d, NULL, NULL, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_SIGNIN_CONFIRM);
        assert_int_equal(m->signin_confirm.status, TETHER_SIGNIN_APPROVED);
        tether_msg_free(m);
        close_keeping_ctx(&c);
        return resumed;
}

static void expect_unauthorized(struct fixture *f, const struct tether_key *signer,
                                const struct tether_key *pub, const struct device *as) {
        struct tether_msg *m = NULL;
        struct chan c;

        open_with_ctx(f, &c);
        assert_true(tether_tls_conn_resumed(c.tls));
        assert_int_equal(chan_signin(&c, &f->p, as, signer, pub, NULL, &m), 0);
        assert_int_equal(m->type, TETHER_FRAME_GOODBYE);
        assert_int_equal(m->goodbye.reason, TETHER_GOODBYE_UNAUTHORIZED);
        tether_msg_free(m);
        close_keeping_ctx(&c);
}

static void test_resumed_and_still_verified(void **state) {
        struct fixture *f = *state;
        char path[300];
        struct stat st;

        /* the keys: created at the first start, as secret as tls.key */
        snprintf(path, sizeof(path), "%s/ticket.keys", f->p.state);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_false(signin_ok(f)); /* first contact: a full handshake */
        assert_true(signin_ok(f));  /* then with the ticket */

        /* After a restart the same keys open the tickets. */
        assert_int_equal(mp_proc_stop(&f->p, SIGTERM), 0);
        assert_int_equal(mp_proc_restart(&f->p, (const char *const[]){"--keepalive", "30", NULL}), 0);
        assert_true(signin_ok(f));

        /* should-fail: a resumed session is still d's certificate key; a
         * SIGNIN of another device over it, signed by that device's own
         * key, is refused, as is one signed by another key for d. */
        expect_unauthorized(f, f->other.key, f->other.key, &f->other);
        expect_unauthorized(f, f->other.key, f->other.key, &f->d);
        expect_unauthorized(f, f->d.key, f->other.key, &f->d);
        assert_true(signin_ok(f));
}

/* A ticket of a site whose keys were replaced: a full handshake, which
 * still signs in. */
static void test_unknown_ticket_full_handshake(void **state) {
        struct fixture *f = *state;
        char path[300];

        assert_false(signin_ok(f));
        assert_true(signin_ok(f));
        assert_int_equal(mp_proc_stop(&f->p, SIGTERM), 0);
        snprintf(path, sizeof(path), "%s/ticket.keys", f->p.state);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(mp_proc_restart(&f->p, (const char *const[]){"--keepalive", "30", NULL}), 0);
        assert_false(signin_ok(f));
        assert_true(signin_ok(f));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_resumed_and_still_verified, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unknown_ticket_full_handshake, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
