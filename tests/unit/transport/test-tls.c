/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#if defined(__SANITIZE_ADDRESS__)
/* libasan's (sanitizer/allocator_interface.h, not always installed) */
size_t __sanitizer_get_current_allocated_bytes(void);
#else
#include <malloc.h>
#endif

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "transport/sign.h"
#include "transport/tls.h"

static const char *const SERVER_NAMES[] = {"mp.example.test", "127.0.0.1", NULL};

struct party {
        struct tether_key *key;
        char *cert;
        char fp[TETHER_FINGERPRINT_LEN];
};

struct fixture {
        struct party server, client, stranger;
        struct party server_ed, client_rsa;
        char dir[64];
        char server_ca[128];   /* the server's own self-signed cert */
        char stranger_ca[128]; /* another cert altogether */
};

static int party_init(struct party *p, enum tether_key_kind kind, const char *cn, const char *const *alt) {
        if (tether_key_generate(kind, &p->key) < 0)
                return -1;
        if (tether_cert_self_signed(p->key, cn, alt, 1, &p->cert) < 0)
                return -1;
        return tether_key_fingerprint(p->key, p->fp);
}

static void party_done(struct party *p) {
        tether_key_free(p->key);
        free(p->cert);
}

static int write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "w");
        int r;

        if (!f)
                return -1;
        r = fputs(text, f) < 0 ? -1 : 0;
        if (fclose(f) != 0)
                r = -1;
        return r;
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        if (party_init(&f->server, TETHER_KEY_EC_P256, "mp", SERVER_NAMES) < 0 ||
            party_init(&f->client, TETHER_KEY_EC_P256, "device", NULL) < 0 ||
            party_init(&f->stranger, TETHER_KEY_EC_P256, "mp", SERVER_NAMES) < 0 ||
            party_init(&f->server_ed, TETHER_KEY_ED25519, "mp-ed", SERVER_NAMES) < 0 ||
            party_init(&f->client_rsa, TETHER_KEY_RSA, "device-rsa", NULL) < 0)
                return -1;
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-tls.XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->server_ca, sizeof(f->server_ca), "%s/server.pem", f->dir);
        snprintf(f->stranger_ca, sizeof(f->stranger_ca), "%s/stranger.pem", f->dir);
        if (write_text(f->server_ca, f->server.cert) < 0 || write_text(f->stranger_ca, f->stranger.cert) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        party_done(&f->server);
        party_done(&f->client);
        party_done(&f->stranger);
        party_done(&f->server_ed);
        party_done(&f->client_rsa);
        (void)unlink(f->server_ca);
        (void)unlink(f->stranger_ca);
        if (rmdir(f->dir) < 0)
                return -1;
        free(f);
        return 0;
}

/* One connection pair over a non-blocking socketpair, both ends in this thread. */
struct pair {
        int fds[2]; /* [0] server, [1] client */
        struct tether_tls_ctx *sctx, *cctx;
        struct tether_tls_conn *s, *c;
        int s_result, c_result;
};

static void pair_open(struct pair *p, const struct party *server, const struct party *client,
                      const char *ca_file, const char *pin, const char *server_name) {
        memset(p, 0, sizeof(*p));
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fds), 0);
        assert_int_equal(tether_tls_server_new(server->cert, server->key, &p->sctx), 0);
        assert_int_equal(tether_tls_client_new(client->cert, client->key, ca_file, pin, &p->cctx), 0);
        assert_int_equal(tether_tls_conn_new(p->sctx, p->fds[0], NULL, &p->s), 0);
        assert_int_equal(tether_tls_conn_new(p->cctx, p->fds[1], server_name, &p->c), 0);
}

static void pair_close(struct pair *p) {
        tether_tls_conn_free(p->s);
        tether_tls_conn_free(p->c);
        tether_tls_ctx_free(p->sctx);
        tether_tls_ctx_free(p->cctx);
        close(p->fds[0]);
        close(p->fds[1]);
}

/* Steps both handshakes until each has finished or failed. A side that
 * fails shuts its socket down so the other side cannot wait forever. */
static void pair_handshake(struct pair *p) {
        enum tether_tls_want want;
        int s = 0, c = 0;

        for (int i = 0; i < 1000 && (s == 0 || c == 0); i++) {
                if (c == 0) {
                        c = tether_tls_handshake(p->c, &want);
                        if (c == 0)
                                assert_true(want == TETHER_TLS_WANT_READ || want == TETHER_TLS_WANT_WRITE);
                        if (c < 0)
                                (void)shutdown(p->fds[1], SHUT_RDWR);
                }
                if (s == 0) {
                        s = tether_tls_handshake(p->s, &want);
                        if (s < 0)
                                (void)shutdown(p->fds[0], SHUT_RDWR);
                }
        }
        assert_true(s != 0);
        assert_true(c != 0);
        p->s_result = s;
        p->c_result = c;
}

/* Writes all of data on one side while reading it on the other. */
static void transfer(struct tether_tls_conn *from, struct tether_tls_conn *to, const uint8_t *data,
                     size_t len) {
        uint8_t *got = malloc(len);
        size_t sent = 0, received = 0;
        enum tether_tls_want want;

        assert_non_null(got);
        for (int i = 0; i < 100000 && received < len; i++) {
                if (sent < len) {
                        ssize_t n = tether_tls_write(from, data + sent, len - sent, &want);

                        if (n == -EAGAIN)
                                assert_int_equal(want, TETHER_TLS_WANT_WRITE);
                        else if (n < 0)
                                fail_msg("write failed: %s", tether_tls_conn_error(from));
                        else
                                sent += (size_t)n;
                }
                for (;;) {
                        ssize_t n = tether_tls_read(to, got + received, len - received, &want);

                        if (n == -EAGAIN)
                                break;
                        if (n <= 0)
                                fail_msg("read failed (%zd): %s", n, tether_tls_conn_error(to));
                        received += (size_t)n;
                        if (received == len)
                                break;
                }
        }
        assert_int_equal(received, len);
        assert_memory_equal(got, data, len);
        free(got);
}

static void test_pinned_handshake_and_data(void **state) {
        struct fixture *f = *state;
        struct tether_key *peer = NULL;
        enum tether_tls_want want;
        uint8_t *big;
        struct pair p;
        char buf[16];

        pair_open(&p, &f->server, &f->client, NULL, f->server.fp, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, 1);
        assert_int_equal(p.s_result, 1);

        /* The server sees the client's key: the identity SIGNIN is checked against. */
        assert_int_equal(tether_tls_peer_key(p.s, &peer), 0);
        assert_true(tether_key_equal(peer, f->client.key));
        assert_false(tether_key_equal(peer, f->server.key));
        tether_key_free(peer);
        assert_int_equal(tether_tls_peer_key(p.c, &peer), 0);
        assert_true(tether_key_equal(peer, f->server.key));
        tether_key_free(peer);

        /* Small messages both ways, then 1 MiB, more than the socket buffers. */
        transfer(p.c, p.s, (const uint8_t *)"hello server", 12);
        transfer(p.s, p.c, (const uint8_t *)"hello device", 12);
        big = malloc(1024 * 1024);
        assert_non_null(big);
        for (size_t i = 0; i < 1024 * 1024; i++)
                big[i] = (uint8_t)(i * 7 + 3);
        transfer(p.c, p.s, big, 1024 * 1024);
        transfer(p.s, p.c, big, 512 * 1024);
        free(big);

        /* Nothing pending: a read asks to wait. */
        assert_false(tether_tls_pending(p.s));
        assert_int_equal(tether_tls_read(p.s, buf, sizeof(buf), &want), -EAGAIN);
        assert_int_equal(want, TETHER_TLS_WANT_READ);

        /* A clean close reads as 0 on the other side. */
        tether_tls_shutdown(p.c);
        assert_int_equal(tether_tls_read(p.s, buf, sizeof(buf), &want), 0);
        pair_close(&p);
}

static void test_wrong_pin(void **state) {
        struct fixture *f = *state;
        char expect[128];
        struct pair p;

        pair_open(&p, &f->server, &f->client, NULL, f->stranger.fp, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, -EPERM);
        snprintf(expect, sizeof(expect), "pinned key mismatch: got %s", f->server.fp);
        assert_string_equal(tether_tls_conn_error(p.c), expect);
        /* The server learns that the client refused it. */
        assert_int_equal(p.s_result, -ECONNREFUSED);
        assert_true(strncmp(tether_tls_conn_error(p.s), "handshake refused by the peer: ", 31) == 0);
        pair_close(&p);
}

static void test_pin_uppercase_and_bad_pins(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ctx *ctx = NULL;
        char upper[TETHER_FINGERPRINT_LEN];
        struct pair p;

        for (size_t i = 0; i < sizeof(upper); i++)
                upper[i] = (char)(f->server.fp[i] >= 'a' && f->server.fp[i] <= 'f' ? f->server.fp[i] - 32
                                                                                   : f->server.fp[i]);
        pair_open(&p, &f->server, &f->client, NULL, upper, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, 1);
        pair_close(&p);

        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, NULL, "abcd", &ctx), -EINVAL);
        assert_int_equal(tether_tls_client_new(
                                 f->client.cert, f->client.key, NULL,
                                 "zz00000000000000000000000000000000000000000000000000000000000000", &ctx),
                         -EINVAL);
        assert_null(ctx);
}

/* Several MP nodes, each with its own key: any pin of the list matches,
 * none matching is refused, and a bad element fails the whole list. */
static void test_pin_list(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ctx *ctx = NULL;
        char list[3 * TETHER_FINGERPRINT_LEN + 16];
        struct pair p;

        snprintf(list, sizeof(list), "%s, %s", f->stranger.fp, f->server.fp);
        pair_open(&p, &f->server, &f->client, NULL, list, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, 1);
        pair_close(&p);

        snprintf(list, sizeof(list), "%s,%s", f->server.fp, f->stranger.fp);
        pair_open(&p, &f->server, &f->client, NULL, list, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, 1);
        pair_close(&p);

        snprintf(list, sizeof(list), "%s,%s", f->stranger.fp, f->client.fp);
        pair_open(&p, &f->server, &f->client, NULL, list, NULL);
        pair_handshake(&p);
        assert_int_equal(p.c_result, -EPERM);
        pair_close(&p);

        snprintf(list, sizeof(list), "%s,abcd", f->server.fp);
        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, NULL, list, &ctx), -EINVAL);
        snprintf(list, sizeof(list), "%s,", f->server.fp);
        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, NULL, list, &ctx), -EINVAL);
        assert_null(ctx);
}

static void test_ca_file_of_another_cert(void **state) {
        struct fixture *f = *state;
        struct pair p;

        pair_open(&p, &f->server, &f->client, f->stranger_ca, NULL, "mp.example.test");
        pair_handshake(&p);
        assert_int_equal(p.c_result, -EPERM);
        assert_true(strncmp(tether_tls_conn_error(p.c), "certificate verify failed: ", 27) == 0);
        assert_int_equal(p.s_result, -ECONNREFUSED);
        assert_true(strncmp(tether_tls_conn_error(p.s), "handshake refused by the peer: ", 31) == 0);
        pair_close(&p);
}

static void test_ca_file_and_host_name(void **state) {
        struct fixture *f = *state;
        struct tether_key *peer = NULL;
        struct pair p;

        pair_open(&p, &f->server, &f->client, f->server_ca, NULL, "mp.example.test");
        pair_handshake(&p);
        if (p.c_result != 1)
                fail_msg("client: %s", tether_tls_conn_error(p.c));
        assert_int_equal(p.s_result, 1);
        assert_int_equal(tether_tls_peer_key(p.s, &peer), 0);
        assert_true(tether_key_equal(peer, f->client.key));
        tether_key_free(peer);
        transfer(p.c, p.s, (const uint8_t *)"signin", 6);
        pair_close(&p);

        /* An IP literal in the SAN. */
        pair_open(&p, &f->server, &f->client, f->server_ca, NULL, "127.0.0.1");
        pair_handshake(&p);
        assert_int_equal(p.c_result, 1);
        assert_int_equal(p.s_result, 1);
        pair_close(&p);
}

static void test_host_name_mismatch(void **state) {
        struct fixture *f = *state;
        struct tether_tls_conn *conn = NULL;
        struct pair p;

        pair_open(&p, &f->server, &f->client, f->server_ca, NULL, "other.example.test");
        pair_handshake(&p);
        assert_int_equal(p.c_result, -EPERM);
        assert_string_equal(tether_tls_conn_error(p.c), "certificate verify failed: hostname mismatch");
        pair_close(&p);

        pair_open(&p, &f->server, &f->client, f->server_ca, NULL, "127.0.0.2");
        pair_handshake(&p);
        assert_int_equal(p.c_result, -EPERM);
        assert_true(strncmp(tether_tls_conn_error(p.c), "certificate verify failed: ", 27) == 0);

        /* Verifying by CA without a name to check is refused up front. */
        assert_int_equal(tether_tls_conn_new(p.cctx, p.fds[1], NULL, &conn), -EINVAL);
        assert_null(conn);
        pair_close(&p);
}

static void test_ed25519_server_rsa_client(void **state) {
        struct fixture *f = *state;
        struct tether_key *peer = NULL;
        struct pair p;

        pair_open(&p, &f->server_ed, &f->client_rsa, NULL, f->server_ed.fp, "mp.example.test");
        pair_handshake(&p);
        if (p.c_result != 1)
                fail_msg("client: %s", tether_tls_conn_error(p.c));
        assert_int_equal(p.s_result, 1);
        assert_int_equal(tether_tls_peer_key(p.s, &peer), 0);
        assert_true(tether_key_equal(peer, f->client_rsa.key));
        assert_int_equal(tether_key_get_kind(peer), TETHER_KEY_RSA);
        tether_key_free(peer);
        transfer(p.s, p.c, (const uint8_t *)"confirm", 7);
        pair_close(&p);
}

static void test_bad_contexts(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ctx *ctx = NULL;
        char missing[160];

        /* A certificate that is not the key's. */
        assert_int_equal(tether_tls_server_new(f->server.cert, f->client.key, &ctx), -EINVAL);
        assert_int_equal(tether_tls_server_new("not a certificate", f->server.key, &ctx), -EBADMSG);
        snprintf(missing, sizeof(missing), "%s/missing.pem", f->dir);
        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, missing, NULL, &ctx), -ENOENT);
        assert_null(ctx);
}

static void test_peer_closes_during_handshake(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ctx *cctx = NULL;
        struct tether_tls_conn *c = NULL;
        enum tether_tls_want want;
        int fds[2], r;

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, NULL, f->server.fp, &cctx), 0);
        assert_int_equal(tether_tls_conn_new(cctx, fds[1], NULL, &c), 0);
        assert_int_equal(tether_tls_handshake(c, &want), 0);
        assert_int_equal(want, TETHER_TLS_WANT_READ);
        close(fds[0]);
        r = tether_tls_handshake(c, &want);
        assert_int_equal(r, -ECONNREFUSED);
        assert_true(strstr(tether_tls_conn_error(c), "closed") != NULL);
        tether_tls_conn_free(c);
        tether_tls_ctx_free(cctx);
        close(fds[1]);
}

/* A plain OpenSSL client limited to one protocol version, against our server. */
static void raw_client_handshake(struct fixture *f, int version, int *ret_server, int *ret_client,
                                 struct tether_key **ret_peer) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        struct tether_tls_ctx *sctx = NULL;
        struct tether_tls_conn *s = NULL;
        enum tether_tls_want want;
        BIO *bio;
        X509 *cert;
        SSL *ssl;
        int fds[2], sr = 0, cr = 0;

        assert_non_null(ctx);
        /* Let the client offer old versions: only our server may refuse them. */
        SSL_CTX_set_security_level(ctx, 0);
        assert_int_equal(SSL_CTX_set_min_proto_version(ctx, version), 1);
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, version), 1);
        bio = BIO_new_mem_buf(f->client.cert, -1);
        assert_non_null(bio);
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        assert_non_null(cert);
        assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(ctx, tether_key_evp(f->client.key)), 1);
        X509_free(cert);
        BIO_free(bio);

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(tether_tls_server_new(f->server.cert, f->server.key, &sctx), 0);
        assert_int_equal(tether_tls_conn_new(sctx, fds[0], NULL, &s), 0);
        ssl = SSL_new(ctx);
        assert_non_null(ssl);
        assert_int_equal(SSL_set_fd(ssl, fds[1]), 1);
        SSL_set_connect_state(ssl);

        for (int i = 0; i < 1000 && (sr == 0 || cr == 0); i++) {
                if (cr == 0) {
                        int r = SSL_do_handshake(ssl);

                        if (r == 1)
                                cr = 1;
                        else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ &&
                                 SSL_get_error(ssl, r) != SSL_ERROR_WANT_WRITE) {
                                cr = -1;
                                (void)shutdown(fds[1], SHUT_RDWR);
                        }
                }
                if (sr == 0) {
                        sr = tether_tls_handshake(s, &want);
                        if (sr < 0)
                                (void)shutdown(fds[0], SHUT_RDWR);
                }
        }
        if (ret_peer && sr == 1)
                assert_int_equal(tether_tls_peer_key(s, ret_peer), 0);
        *ret_server = sr;
        *ret_client = cr;

        SSL_free(ssl);
        SSL_CTX_free(ctx);
        tether_tls_conn_free(s);
        tether_tls_ctx_free(sctx);
        close(fds[0]);
        close(fds[1]);
}

static void test_server_tls12_accepted_tls11_refused(void **state) {
        struct fixture *f = *state;
        struct tether_key *peer = NULL;
        int sr = 0, cr = 0;

        /* TLS 1.2: the self-signed client certificate is accepted there too. */
        raw_client_handshake(f, TLS1_2_VERSION, &sr, &cr, &peer);
        assert_int_equal(sr, 1);
        assert_int_equal(cr, 1);
        assert_non_null(peer);
        assert_true(tether_key_equal(peer, f->client.key));
        tether_key_free(peer);

        raw_client_handshake(f, TLS1_1_VERSION, &sr, &cr, NULL);
        assert_true(sr < 0);
        assert_int_equal(cr, -1);
}

/* A second connection of the same client context resumes with the ticket
 * of the first when the server has ticket keys; the server still sees the
 * client certificate's key (SIGNIN is checked against it). */
static void connect_again(struct pair *p, const char *server_name) {
        tether_tls_conn_free(p->s);
        tether_tls_conn_free(p->c);
        close(p->fds[0]);
        close(p->fds[1]);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fds), 0);
        assert_int_equal(tether_tls_conn_new(p->sctx, p->fds[0], NULL, &p->s), 0);
        assert_int_equal(tether_tls_conn_new(p->cctx, p->fds[1], server_name, &p->c), 0);
        pair_handshake(p);
        assert_int_equal(p->s_result, 1);
        assert_int_equal(p->c_result, 1);
        /* the client takes the server's ticket with the first bytes it reads */
        transfer(p->s, p->c, (const uint8_t *)"confirm", 7);
        transfer(p->c, p->s, (const uint8_t *)"signin", 6);
}

static void ticket_key(struct tether_tls_ticket_key *k, uint8_t fill) {
        memset(k->bytes, fill, sizeof(k->bytes));
}

static void test_session_resumption(void **state) {
        struct fixture *f = *state;
        struct tether_tls_ticket_key keys[2];
        struct tether_key *peer = NULL;
        struct pair p;

        ticket_key(&keys[0], 0x11);
        pair_open(&p, &f->server, &f->client, NULL, f->server.fp, "127.0.0.1");
        assert_int_equal(tether_tls_server_set_ticket_keys(p.sctx, keys, 1, 3600), 0);
        connect_again(&p, "127.0.0.1");
        assert_false(tether_tls_conn_resumed(p.s));

        connect_again(&p, "127.0.0.1");
        assert_true(tether_tls_conn_resumed(p.s));
        assert_true(tether_tls_conn_resumed(p.c));
        assert_int_equal(tether_tls_peer_key(p.s, &peer), 0);
        assert_true(tether_key_equal(peer, f->client.key));
        tether_key_free(peer);

        /* Rotated: the previous key still opens its tickets. */
        ticket_key(&keys[1], 0x11);
        ticket_key(&keys[0], 0x22);
        assert_int_equal(tether_tls_server_set_ticket_keys(p.sctx, keys, 2, 3600), 0);
        connect_again(&p, "127.0.0.1");
        assert_true(tether_tls_conn_resumed(p.s));
        /* ...and the ticket it gave then is under the new key alone. */
        assert_int_equal(tether_tls_server_set_ticket_keys(p.sctx, keys, 1, 3600), 0);
        connect_again(&p, "127.0.0.1");
        assert_true(tether_tls_conn_resumed(p.s));

        /* A key the server no longer has: a full handshake, which works. */
        ticket_key(&keys[0], 0x33);
        assert_int_equal(tether_tls_server_set_ticket_keys(p.sctx, keys, 1, 3600), 0);
        connect_again(&p, "127.0.0.1");
        assert_false(tether_tls_conn_resumed(p.s));
        connect_again(&p, "127.0.0.1");
        assert_true(tether_tls_conn_resumed(p.s));

        /* A connection cut without close_notify (a killed MP) ends in an
         * error on the client; its ticket is still offered next time. */
        {
                enum tether_tls_want want;
                char buf[8];

                assert_int_equal(shutdown(p.fds[0], SHUT_RDWR), 0);
                assert_true(tether_tls_read(p.c, buf, sizeof(buf), &want) < 0);
        }
        connect_again(&p, "127.0.0.1");
        assert_true(tether_tls_conn_resumed(p.s));

        /* Another server name: the ticket is not offered. */
        connect_again(&p, "mp.example.test");
        assert_false(tether_tls_conn_resumed(p.c));

        /* Forgotten by the client, or tickets off on the server: full. */
        connect_again(&p, "127.0.0.1");
        tether_tls_client_forget_session(p.cctx);
        connect_again(&p, "127.0.0.1");
        assert_false(tether_tls_conn_resumed(p.s));
        assert_int_equal(tether_tls_server_set_ticket_keys(p.sctx, NULL, 0, 0), 0);
        connect_again(&p, "127.0.0.1");
        assert_false(tether_tls_conn_resumed(p.s));

        assert_int_equal(tether_tls_server_set_ticket_keys(p.cctx, keys, 1, 3600), -EINVAL);
        assert_int_equal(
                tether_tls_server_set_ticket_keys(p.sctx, keys, TETHER_TLS_MAX_TICKET_KEYS + 1, 3600),
                -EINVAL);
        pair_close(&p);
}

/* Without ticket keys (the default) nothing is resumed. */
static void test_no_resumption_by_default(void **state) {
        struct fixture *f = *state;
        struct pair p;

        pair_open(&p, &f->server, &f->client, NULL, f->server.fp, "127.0.0.1");
        connect_again(&p, "127.0.0.1");
        connect_again(&p, "127.0.0.1");
        assert_false(tether_tls_conn_resumed(p.s));
        assert_false(tether_tls_conn_resumed(p.c));
        pair_close(&p);
}

static size_t heap_in_use(void) {
#if defined(__SANITIZE_ADDRESS__)
        return __sanitizer_get_current_allocated_bytes();
#else
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd;
#endif
}

/* An idle connection holds no TLS record buffers (SSL_MODE_RELEASE_BUFFERS):
 * the heap held per idle pair (server and client end) after data went both
 * ways is far below the two 17 KiB buffers each end would otherwise keep. */
static void test_idle_connections_release_buffers(void **state) {
        enum { N = 16 };
        struct fixture *f = *state;
        struct tether_tls_ctx *sctx = NULL, *cctx = NULL;
        struct pair p[N];
        size_t before, per_pair;

        assert_int_equal(tether_tls_server_new(f->server.cert, f->server.key, &sctx), 0);
        assert_int_equal(tether_tls_client_new(f->client.cert, f->client.key, NULL, f->server.fp, &cctx), 0);
        before = heap_in_use();
        for (int i = 0; i < N; i++) {
                memset(&p[i], 0, sizeof(p[i]));
                assert_int_equal(
                        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p[i].fds), 0);
                assert_int_equal(tether_tls_conn_new(sctx, p[i].fds[0], NULL, &p[i].s), 0);
                assert_int_equal(tether_tls_conn_new(cctx, p[i].fds[1], NULL, &p[i].c), 0);
                pair_handshake(&p[i]);
                assert_int_equal(p[i].s_result, 1);
                transfer(p[i].c, p[i].s, (const uint8_t *)"signin", 6);
                transfer(p[i].s, p[i].c, (const uint8_t *)"confirm", 7);
        }
        per_pair = (heap_in_use() - before) / N;
        print_message("heap per idle TLS pair: %zu bytes\n", per_pair);
        assert_true(per_pair < 4 * 17 * 1024);
        for (int i = 0; i < N; i++) {
                tether_tls_conn_free(p[i].s);
                tether_tls_conn_free(p[i].c);
                close(p[i].fds[0]);
                close(p[i].fds[1]);
        }
        tether_tls_ctx_free(sctx);
        tether_tls_ctx_free(cctx);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pinned_handshake_and_data),
                cmocka_unit_test(test_wrong_pin),
                cmocka_unit_test(test_pin_uppercase_and_bad_pins),
                cmocka_unit_test(test_pin_list),
                cmocka_unit_test(test_ca_file_of_another_cert),
                cmocka_unit_test(test_ca_file_and_host_name),
                cmocka_unit_test(test_host_name_mismatch),
                cmocka_unit_test(test_ed25519_server_rsa_client),
                cmocka_unit_test(test_bad_contexts),
                cmocka_unit_test(test_peer_closes_during_handshake),
                cmocka_unit_test(test_server_tls12_accepted_tls11_refused),
                cmocka_unit_test(test_session_resumption),
                cmocka_unit_test(test_no_resumption_by_default),
                cmocka_unit_test(test_idle_connections_release_buffers),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
