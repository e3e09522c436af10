/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/sign.h"
#include "transport/tls.h"

#define FINGERPRINT_HEX_LEN 64

struct tether_tls_ctx {
        SSL_CTX *ssl_ctx;
        bool server;
        bool pinned;
        char *pins; /* "fp1,fp2": lowercase hex, when pinned (owned) */
        /* server: [0] seals new tickets, all open them */
        struct tether_tls_ticket_key tickets[TETHER_TLS_MAX_TICKET_KEYS];
        size_t n_tickets;
        /* client: the last ticket received, and the server name it is for */
        SSL_SESSION *session;
        char *session_name;
};

struct tether_tls_conn {
        SSL *ssl;
        bool server;
        bool pinned;
        char *pins; /* a copy of the context's, when pinned (owned) */
        /* Set by the verify callback when it refused the peer. */
        bool verify_refused;
        char *server_name; /* client: what the kept ticket is for */
        char error[256];
};

DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);

static void conn_set_error(struct tether_tls_conn *conn, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void conn_set_error(struct tether_tls_conn *conn, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(conn->error, sizeof(conn->error), fmt, ap);
        va_end(ap);
}

/* ---- a socket BIO that never raises SIGPIPE ----
 *
 * OpenSSL's socket BIO writes with write(2): a peer that went away would
 * kill a process that has not ignored SIGPIPE. This one uses send(2) with
 * MSG_NOSIGNAL, so the library is safe whatever its host does with signals.
 * The fd is not owned. */

static BIO_METHOD *nosig_method;
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

static int nosig_fd(BIO *b) {
        return (int)(intptr_t)BIO_get_data(b);
}

static int nosig_write(BIO *b, const char *data, size_t len, size_t *written) {
        ssize_t n;

        BIO_clear_retry_flags(b);
        do
                n = send(nosig_fd(b), data, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                        BIO_set_retry_write(b);
                return 0;
        }
        *written = (size_t)n;
        return 1;
}

static int nosig_read(BIO *b, char *buf, size_t len, size_t *readbytes) {
        ssize_t n;

        BIO_clear_retry_flags(b);
        do
                n = recv(nosig_fd(b), buf, len, 0);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                        BIO_set_retry_read(b);
                return 0;
        }
        if (n == 0) {
                /* Lets libssl tell an unexpected EOF from a system error. */
                BIO_set_flags(b, BIO_FLAGS_IN_EOF);
                return 0;
        }
        *readbytes = (size_t)n;
        return 1;
}

static long nosig_ctrl(BIO *b, int cmd, long num, void *ptr) {
        switch (cmd) {
        case BIO_CTRL_FLUSH:
                return 1;
        case BIO_CTRL_EOF:
                return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
        case BIO_C_GET_FD:
                if (ptr)
                        *(int *)ptr = nosig_fd(b);
                return nosig_fd(b);
        default:
                return 0;
        }
}

static int nosig_create(BIO *b) {
        BIO_set_init(b, 1);
        return 1;
}

static void nosig_method_init(void) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                     "tether socket");

        if (!m)
                return;
        if (BIO_meth_set_write_ex(m, nosig_write) != 1 || BIO_meth_set_read_ex(m, nosig_read) != 1 ||
            BIO_meth_set_ctrl(m, nosig_ctrl) != 1 || BIO_meth_set_create(m, nosig_create) != 1) {
                BIO_meth_free(m);
                return;
        }
        nosig_method = m;
}

static BIO *nosig_bio_new(int fd) {
        BIO *b;

        if (pthread_once(&nosig_once, nosig_method_init) != 0 || !nosig_method)
                return NULL;
        b = BIO_new(nosig_method);
        if (!b)
                return NULL;
        BIO_set_data(b, (void *)(intptr_t)fd);
        return b;
}

/* ---- verification ---- */

/* SHA-256 of the leaf's SubjectPublicKeyInfo exactly as the certificate
 * carries it, lowercase hex. Works for any key type, so a mismatch can be
 * reported even for keys the protocol would not sign with. */
static int cert_spki_fingerprint(X509 *cert, char ret[FINGERPRINT_HEX_LEN + 1]) {
        unsigned char *der = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        int n, ok;

        n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
        if (n <= 0)
                return -EIO;
        ok = EVP_Digest(der, (size_t)n, md, &md_len, EVP_sha256(), NULL);
        OPENSSL_free(der);
        if (ok != 1 || md_len != 32)
                return -EIO;
        hex_encode(md, md_len, ret);
        return 0;
}

static struct tether_tls_conn *conn_of_store_ctx(X509_STORE_CTX *store) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());

        return ssl ? SSL_get_app_data(ssl) : NULL;
}

/* Whether fp (64 lowercase hex digits) is one of "fp1,fp2,...": several
 * MP nodes may each present their own key (PROTOCOL-v1 section 7.4). */
static bool pin_listed(const char *pins, const char *fp) {
        for (const char *p = pins; p && *p;) {
                size_t n = strcspn(p, ",");

                if (n == FINGERPRINT_HEX_LEN && memcmp(p, fp, n) == 0)
                        return true;
                p += n;
                if (*p == ',')
                        p++;
        }
        return false;
}

/* Replaces chain verification on both the server (any client certificate:
 * the TLS handshake already proves the client holds its key, and the
 * identity is that key, checked against the signed SIGNIN) and a pinned
 * client (the server key's fingerprint instead of a CA). */
static int cert_verify_cb(X509_STORE_CTX *store, void *userdata) {
        struct tether_tls_conn *conn = conn_of_store_ctx(store);
        X509 *leaf = X509_STORE_CTX_get0_cert(store);
        char fp[FINGERPRINT_HEX_LEN + 1];

        if (!conn || !leaf) {
                X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
                return 0;
        }
        if (!conn->pinned) {
                X509_STORE_CTX_set_error(store, X509_V_OK);
                return 1;
        }
        if (cert_spki_fingerprint(leaf, fp) < 0) {
                conn->verify_refused = true;
                conn_set_error(conn, "pinned key mismatch: cannot read the server's key");
                X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
                return 0;
        }
        if (!pin_listed(conn->pins, fp)) {
                conn->verify_refused = true;
                conn_set_error(conn, "pinned key mismatch: got %s", fp);
                X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
                return 0;
        }
        X509_STORE_CTX_set_error(store, X509_V_OK);
        return 1;
}

/* ---- contexts ---- */

/* Installs the certificate (and any chain after it in the PEM) and key. */
static int ctx_use_cert_and_key(SSL_CTX *ssl_ctx, const char *cert_pem, const struct tether_key *key) {
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_(X509_freep) X509 *leaf = NULL;
        EVP_PKEY *pkey = tether_key_evp(key);

        if (!pkey || !tether_key_has_private(key))
                return -ENOKEY;
        bio = BIO_new_mem_buf(cert_pem, -1);
        if (!bio)
                return -ENOMEM;
        leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!leaf)
                return -EBADMSG;
        if (X509_check_private_key(leaf, pkey) != 1)
                return -EINVAL; /* the key is not the certificate's */
        if (SSL_CTX_use_certificate(ssl_ctx, leaf) != 1)
                return -EBADMSG;
        for (;;) {
                X509 *extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);

                if (!extra)
                        break;
                if (SSL_CTX_add0_chain_cert(ssl_ctx, extra) != 1) {
                        X509_free(extra);
                        return -EBADMSG;
                }
        }
        /* The loop ends on "no more PEM": not an error. */
        ERR_clear_error();
        if (SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1)
                return -EBADMSG;
        if (SSL_CTX_check_private_key(ssl_ctx) != 1)
                return -EINVAL;
        return 0;
}

static int ctx_new(bool server, const char *cert_pem, const struct tether_key *key,
                   struct tether_tls_ctx **ret) {
        struct tether_tls_ctx *ctx;
        int r;

        if (!cert_pem || !key || !ret)
                return -EINVAL;
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
                return -ENOMEM;
        ctx->server = server;
        ctx->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
        if (!ctx->ssl_ctx) {
                r = -ENOMEM;
                goto fail;
        }
        if (SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION) != 1) {
                r = -EIO;
                goto fail;
        }
        /* TLS 1.2 only with forward secrecy and AEAD (an audit found RSA key
         * exchange and CBC suites accepted); TLS 1.3 as OpenSSL has it. */
        if (SSL_CTX_set_cipher_list(ctx->ssl_ctx, TETHER_TLS12_CIPHERS) != 1) {
                r = -EIO;
                goto fail;
        }
        SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
        /* Partial writes report progress; a retried write may come from a
         * buffer that moved (the owner's queue may have reallocated). */
        /* An idle connection holds no record buffers (about 34 KiB each):
         * OpenSSL allocates them per read or write and frees them when
         * empty. An MP with ten thousand idle channels is mostly that. */
        SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                               SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_app_data(ctx->ssl_ctx, ctx);
        r = ctx_use_cert_and_key(ctx->ssl_ctx, cert_pem, key);
        if (r < 0)
                goto fail;
        *ret = ctx;
        return 0;
fail:
        ERR_clear_error();
        tether_tls_ctx_free(ctx);
        return r;
}

int tether_tls_server_new(const char *cert_pem, const struct tether_key *key, struct tether_tls_ctx **ret) {
        static const unsigned char sid_ctx[] = "tether-mp";
        struct tether_tls_ctx *ctx = NULL;
        int r;

        r = ctx_new(true, cert_pem, key, &ctx);
        if (r < 0)
                return r;
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_cert_verify_callback(ctx->ssl_ctx, cert_verify_cb, NULL);
        /* No resumption until tether_tls_server_set_ticket_keys(). */
        SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
        if (SSL_CTX_set_num_tickets(ctx->ssl_ctx, 0) != 1 ||
            SSL_CTX_set_session_id_context(ctx->ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1) {
                ERR_clear_error();
                tether_tls_ctx_free(ctx);
                return -EIO;
        }
        *ret = ctx;
        return 0;
}

/* Seals (enc 1) or opens (enc 0) a ticket with our keys. OpenSSL's ticket
 * format fixes AES-256-CBC with HMAC-SHA256 (encrypt then MAC); the
 * record ciphers' AEAD-only rule is not about it. */
static int ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc) {
        struct tether_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
        const struct tether_tls_ticket_key *k = NULL;
        OSSL_PARAM params[3];

        if (!ctx || ctx->n_tickets == 0)
                return 0; /* no ticket issued, or a full handshake */
        if (enc) {
                k = &ctx->tickets[0];
                memcpy(name, k->bytes, 16);
                if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1 ||
                    EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->bytes + 16, iv) != 1)
                        return -1;
        } else {
                for (size_t i = 0; i < ctx->n_tickets && !k; i++)
                        if (memcmp(name, ctx->tickets[i].bytes, 16) == 0)
                                k = &ctx->tickets[i];
                if (!k)
                        return 0; /* a key rotated out, or another site's */
                if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->bytes + 16, iv) != 1)
                        return -1;
        }
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(k->bytes + 48), 32);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        if (EVP_MAC_CTX_set_params(hctx, params) != 1)
                return -1;
        /* 2: accepted, and a new ticket (under the current key) sent. A
         * TLS 1.3 client uses a ticket once (RFC 8446 C.4): without a new
         * one it would come back next time with a full handshake. */
        return enc ? 1 : 2;
}

int tether_tls_server_set_ticket_keys(struct tether_tls_ctx *ctx, const struct tether_tls_ticket_key *keys,
                                      size_t n, uint32_t lifetime_sec) {
        if (!ctx || !ctx->server || n > TETHER_TLS_MAX_TICKET_KEYS ||
            (n > 0 && (!keys || lifetime_sec == 0)))
                return -EINVAL;
        OPENSSL_cleanse(ctx->tickets, sizeof(ctx->tickets));
        if (n > 0)
                memcpy(ctx->tickets, keys, n * sizeof(*keys));
        ctx->n_tickets = n;
        if (n == 0) {
                SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
                (void)SSL_CTX_set_num_tickets(ctx->ssl_ctx, 0);
                SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
                return 0;
        }
        /* Stateless tickets: the server keeps nothing per session. */
        SSL_CTX_clear_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
        (void)SSL_CTX_set_timeout(ctx->ssl_ctx, (long)lifetime_sec);
        if (SSL_CTX_set_num_tickets(ctx->ssl_ctx, 1) != 1 ||
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl_ctx, ticket_key_cb) != 1) {
                ERR_clear_error();
                return -EIO;
        }
        return 0;
}

static bool same_name(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Keeps a copy of the newest ticket the server sent, for the next
 * connection. A copy, and a copy again for each connection that offers it:
 * libssl marks a connection's session not resumable when the connection
 * ends by a fatal error or without close_notify (an MP killed, a network
 * cut), which must not cost the ticket kept here. */
static int client_new_session_cb(SSL *ssl, SSL_SESSION *sess) {
        struct tether_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
        struct tether_tls_conn *conn = SSL_get_app_data(ssl);
        SSL_SESSION *copy;
        char *name = NULL;

        if (!ctx || !conn || !SSL_SESSION_is_resumable(sess))
                return 0;
        if (conn->server_name) {
                name = strdup(conn->server_name);
                if (!name)
                        return 0;
        }
        copy = SSL_SESSION_dup(sess);
        if (!copy) {
                free(name);
                ERR_clear_error();
                return 0;
        }
        tether_tls_client_forget_session(ctx);
        ctx->session = copy;
        ctx->session_name = name;
        return 0; /* sess stays libssl's */
}

void tether_tls_client_forget_session(struct tether_tls_ctx *ctx) {
        if (!ctx)
                return;
        SSL_SESSION_free(ctx->session);
        ctx->session = NULL;
        free(ctx->session_name);
        ctx->session_name = NULL;
}

/* Accepts 64 hex digits in either case, or a comma-separated list of them
 * (spaces allowed around the commas); returns them lowercase, joined by ','. */
static int parse_pins(const char *text, char **ret) {
        _cleanup_(freep) char *out = malloc(strlen(text) + 1);
        size_t n = 0, digits = 0;

        if (!out)
                return -ENOMEM;
        for (const char *p = text;; p++) {
                char c = *p;

                if (c == ' ' || c == '\t')
                        continue;
                if (c == ',' || c == '\0') {
                        if (digits != FINGERPRINT_HEX_LEN)
                                return -EINVAL;
                        digits = 0;
                        if (c == '\0')
                                break;
                        out[n++] = ',';
                        continue;
                }
                if (c >= 'A' && c <= 'F')
                        c = (char)(c - 'A' + 'a');
                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) || digits >= FINGERPRINT_HEX_LEN)
                        return -EINVAL;
                out[n++] = c;
                digits++;
        }
        out[n] = '\0';
        *ret = TAKE_PTR(out);
        return 0;
}

int tether_tls_client_new(const char *cert_pem, const struct tether_key *key, const char *ca_file,
                          const char *pinned_fingerprint, struct tether_tls_ctx **ret) {
        struct tether_tls_ctx *ctx = NULL;
        _cleanup_(freep) char *pins = NULL;
        int r;

        if (pinned_fingerprint) {
                r = parse_pins(pinned_fingerprint, &pins);
                if (r < 0)
                        return r;
        }
        if (!pinned_fingerprint && ca_file && access(ca_file, R_OK) < 0)
                return -errno;

        r = ctx_new(false, cert_pem, key, &ctx);
        if (r < 0)
                return r;
        SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, client_new_session_cb);
        if (pinned_fingerprint) {
                ctx->pinned = true;
                ctx->pins = TAKE_PTR(pins);
                SSL_CTX_set_cert_verify_callback(ctx->ssl_ctx, cert_verify_cb, NULL);
        } else {
                int ok = ca_file ? SSL_CTX_load_verify_file(ctx->ssl_ctx, ca_file)
                                 : SSL_CTX_set_default_verify_paths(ctx->ssl_ctx);

                if (ok != 1) {
                        ERR_clear_error();
                        tether_tls_ctx_free(ctx);
                        return ca_file ? -EBADMSG : -EIO;
                }
        }
        *ret = ctx;
        return 0;
}

struct tether_tls_ctx *tether_tls_ctx_free(struct tether_tls_ctx *ctx) {
        if (!ctx)
                return NULL;
        tether_tls_client_forget_session(ctx);
        SSL_CTX_free(ctx->ssl_ctx);
        OPENSSL_cleanse(ctx->tickets, sizeof(ctx->tickets));
        free(ctx->pins);
        free(ctx);
        return NULL;
}

/* ---- connections ---- */

static bool is_ip_literal(const char *name) {
        unsigned char buf[sizeof(struct in6_addr)];

        return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int tether_tls_conn_new(struct tether_tls_ctx *ctx, int fd, const char *server_name,
                        struct tether_tls_conn **ret) {
        struct tether_tls_conn *conn;
        BIO *bio;
        int r = -EIO;

        if (!ctx || fd < 0 || !ret)
                return -EINVAL;
        /* A CA-verified client must know whom it expects: a chain alone
         * would accept any certificate the CA ever issued. */
        if (!ctx->server && !ctx->pinned && (!server_name || !*server_name))
                return -EINVAL;

        conn = calloc(1, sizeof(*conn));
        if (!conn)
                return -ENOMEM;
        conn->server = ctx->server;
        conn->pinned = ctx->pinned;
        if (ctx->pins) {
                conn->pins = strdup(ctx->pins);
                if (!conn->pins) {
                        free(conn);
                        return -ENOMEM;
                }
        }
        conn->ssl = SSL_new(ctx->ssl_ctx);
        if (!conn->ssl) {
                r = -ENOMEM;
                goto fail;
        }
        SSL_set_app_data(conn->ssl, conn);
        bio = nosig_bio_new(fd);
        if (!bio) {
                r = -ENOMEM;
                goto fail;
        }
        SSL_set_bio(conn->ssl, bio, bio);

        if (ctx->server) {
                SSL_set_accept_state(conn->ssl);
        } else {
                if (server_name && *server_name) {
                        bool ip = is_ip_literal(server_name);

                        /* SNI carries host names only, never addresses (RFC 6066). */
                        if (!ip && SSL_set_tlsext_host_name(conn->ssl, server_name) != 1)
                                goto fail;
                        if (!ctx->pinned) {
                                X509_VERIFY_PARAM *param = SSL_get0_param(conn->ssl);

                                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                                if (ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) != 1
                                       : X509_VERIFY_PARAM_set1_host(param, server_name, 0) != 1) {
                                        r = -EINVAL;
                                        goto fail;
                                }
                        }
                }
                if (server_name) {
                        conn->server_name = strdup(server_name);
                        if (!conn->server_name) {
                                r = -ENOMEM;
                                goto fail;
                        }
                }
                /* Resume only with the server the ticket came from. */
                if (ctx->session && same_name(ctx->session_name, server_name)) {
                        SSL_SESSION *copy = SSL_SESSION_dup(ctx->session);
                        int ok = copy && SSL_set_session(conn->ssl, copy) == 1;

                        SSL_SESSION_free(copy); /* SSL_set_session took its own reference */
                        if (!ok)
                                goto fail;
                }
                SSL_set_connect_state(conn->ssl);
        }
        *ret = conn;
        return 0;
fail:
        ERR_clear_error();
        tether_tls_conn_free(conn);
        return r;
}

struct tether_tls_conn *tether_tls_conn_free(struct tether_tls_conn *conn) {
        if (!conn)
                return NULL;
        SSL_free(conn->ssl);
        free(conn->server_name);
        free(conn->pins);
        free(conn);
        return NULL;
}

/* True when OpenSSL's error says the peer ended the handshake: it sent an
 * alert, or closed the connection. */
static bool error_is_from_peer(unsigned long e) {
        int reason = ERR_GET_REASON(e);

        return ERR_GET_LIB(e) == ERR_LIB_SSL &&
               (reason >= SSL_AD_REASON_OFFSET || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING);
}

/* Translates a failed SSL call into a negative errno and conn->error.
 * io_errno is errno right after the call. */
static int conn_fail(struct tether_tls_conn *conn, int ssl_error, int io_errno, bool handshake) {
        unsigned long e = ERR_peek_error();
        char reason[160];
        int r;

        if (handshake && conn->verify_refused) {
                r = -EPERM; /* conn->error already says why */
                goto done;
        }
        if (handshake && !conn->server) {
                long v = SSL_get_verify_result(conn->ssl);

                if (v != X509_V_OK) {
                        conn_set_error(conn, "certificate verify failed: %s",
                                       X509_verify_cert_error_string(v));
                        r = -EPERM;
                        goto done;
                }
        }

        if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
                if (io_errno == 0 || io_errno == ECONNRESET || io_errno == EPIPE) {
                        conn_set_error(conn, "connection closed by the peer%s",
                                       handshake ? " during the handshake" : "");
                        r = handshake ? -ECONNREFUSED : -ECONNRESET;
                } else {
                        conn_set_error(conn, "socket error: %s", strerror(io_errno));
                        r = -io_errno;
                }
                goto done;
        }

        if (e != 0)
                ERR_error_string_n(e, reason, sizeof(reason));
        else
                (void)strscpy(reason, sizeof(reason), "unknown TLS error");
        if (e != 0 && error_is_from_peer(e)) {
                const char *what = ERR_reason_error_string(e);

                conn_set_error(conn, "%s: %s",
                               handshake ? "handshake refused by the peer" : "connection ended",
                               what ? what : reason);
                r = handshake ? -ECONNREFUSED : -ECONNRESET;
        } else {
                conn_set_error(conn, "TLS error: %s", reason);
                r = -EPROTO;
        }
done:
        ERR_clear_error();
        return r;
}

static int want_of(int ssl_error, enum tether_tls_want *ret_want) {
        switch (ssl_error) {
        case SSL_ERROR_WANT_READ:
                *ret_want = TETHER_TLS_WANT_READ;
                return 1;
        case SSL_ERROR_WANT_WRITE:
                *ret_want = TETHER_TLS_WANT_WRITE;
                return 1;
        default:
                return 0;
        }
}

int tether_tls_handshake(struct tether_tls_conn *conn, enum tether_tls_want *ret_want) {
        int r, err, saved_errno;

        if (!conn || !ret_want)
                return -EINVAL;
        *ret_want = TETHER_TLS_WANT_NONE;
        ERR_clear_error();
        errno = 0;
        r = SSL_do_handshake(conn->ssl);
        saved_errno = errno;
        if (r == 1)
                return 1;
        err = SSL_get_error(conn->ssl, r);
        if (want_of(err, ret_want))
                return 0;
        return conn_fail(conn, err, saved_errno, true);
}

ssize_t tether_tls_read(struct tether_tls_conn *conn, void *buf, size_t len,
                        enum tether_tls_want *ret_want) {
        size_t got = 0;
        int r, err, saved_errno;

        if (!conn || !ret_want || (len > 0 && !buf))
                return -EINVAL;
        *ret_want = TETHER_TLS_WANT_NONE;
        if (len == 0)
                return -EINVAL;
        ERR_clear_error();
        errno = 0;
        r = SSL_read_ex(conn->ssl, buf, len, &got);
        saved_errno = errno;
        if (r == 1)
                return (ssize_t)got;
        err = SSL_get_error(conn->ssl, r);
        if (err == SSL_ERROR_ZERO_RETURN)
                return 0;
        if (want_of(err, ret_want))
                return -EAGAIN;
        return conn_fail(conn, err, saved_errno, false);
}

ssize_t tether_tls_write(struct tether_tls_conn *conn, const void *buf, size_t len,
                         enum tether_tls_want *ret_want) {
        size_t done = 0;
        int r, err, saved_errno;

        if (!conn || !ret_want || !buf || len == 0)
                return -EINVAL;
        *ret_want = TETHER_TLS_WANT_NONE;
        ERR_clear_error();
        errno = 0;
        r = SSL_write_ex(conn->ssl, buf, len, &done);
        saved_errno = errno;
        if (r == 1)
                return (ssize_t)done;
        err = SSL_get_error(conn->ssl, r);
        if (want_of(err, ret_want))
                return -EAGAIN;
        return conn_fail(conn, err, saved_errno, false);
}

bool tether_tls_pending(const struct tether_tls_conn *conn) {
        return conn && SSL_pending(conn->ssl) > 0;
}

/* The peer certificate's public key (borrowed): -ENOENT without a
 * certificate, -EBADMSG when its key cannot be read. */
static int peer_pubkey(const struct tether_tls_conn *conn, EVP_PKEY **ret) {
        X509 *cert = SSL_get0_peer_certificate(conn->ssl);

        if (!cert)
                return -ENOENT;
        *ret = X509_get0_pubkey(cert);
        if (!*ret) {
                ERR_clear_error();
                return -EBADMSG;
        }
        return 0;
}

int tether_tls_peer_key(const struct tether_tls_conn *conn, struct tether_key **ret) {
        EVP_PKEY *pkey;
        int r;

        if (!conn || !ret)
                return -EINVAL;
        r = peer_pubkey(conn, &pkey);
        return r < 0 ? r : tether_key_from_evp(pkey, ret);
}

int tether_tls_peer_key_name(const struct tether_tls_conn *conn, char *buf, size_t size) {
        EVP_PKEY *pkey;
        const char *type;
        int r;

        if (!conn || !buf || size == 0)
                return -EINVAL;
        r = peer_pubkey(conn, &pkey);
        if (r == -ENOENT)
                return r;
        if (r < 0) {
                snprintf(buf, size, "an unreadable key");
                return 0;
        }
        type = EVP_PKEY_get0_type_name(pkey);
        snprintf(buf, size, "%s of %d bits", type ? type : "unknown type", EVP_PKEY_get_bits(pkey));
        return 0;
}

bool tether_tls_conn_resumed(const struct tether_tls_conn *conn) {
        return conn && SSL_session_reused(conn->ssl) == 1;
}

const char *tether_tls_conn_error(const struct tether_tls_conn *conn) {
        if (!conn)
                return "no connection";
        return conn->error[0] ? conn->error : "no error";
}

void tether_tls_shutdown(struct tether_tls_conn *conn) {
        if (!conn)
                return;
        ERR_clear_error();
        /* One attempt: sends close_notify if the socket takes it; we do not
         * wait for the peer's. */
        (void)SSL_shutdown(conn->ssl);
        ERR_clear_error();
}
