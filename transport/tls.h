/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Non-blocking TLS over a connected socket, with OpenSSL, for both sides of
 * the channel: tether-mp's listener and tetherd's TCP channel. No event loop
 * here: the owner polls the fd and calls in when it is readable or
 * writable; each call reports what it waits for next.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tether_key;

/* The TLS 1.2 cipher suites both sides allow: forward-secret key exchange
 * (ECDHE) and AEAD encryption only; no RSA key exchange, no CBC. TLS 1.3
 * keeps OpenSSL's default suites, which all are. OpenSSL cipher-list
 * syntax, also given to libcurl (CURLOPT_SSL_CIPHER_LIST) by the agent's
 * HTTPS channel. */
#define TETHER_TLS12_CIPHERS                                                                                \
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"          \
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A TLS configuration (wraps SSL_CTX). Owned by its creator. */
struct tether_tls_ctx;

/* Server: presents cert_pem/key; requires a client certificate and accepts
 * self-signed ones (identity comes from the signed SIGNIN, bound to the
 * certificate's key). TLS 1.2 minimum. */
int tether_tls_server_new(const char *cert_pem, const struct tether_key *key, struct tether_tls_ctx **ret);

/* Client: presents the device certificate and key; verifies the server
 * either against ca_file (PEM bundle; NULL for the system store) and the
 * host name, or, when pinned_fingerprint is not NULL, by the SHA-256 of the
 * server key's SubjectPublicKeyInfo instead of the chain. pinned_fingerprint
 * may list several, comma-separated (one per MP node): any one matches.
 * -EINVAL when one is not 64 hex digits. */
int tether_tls_client_new(const char *cert_pem, const struct tether_key *key, const char *ca_file,
                          const char *pinned_fingerprint, struct tether_tls_ctx **ret);

struct tether_tls_ctx *tether_tls_ctx_free(struct tether_tls_ctx *ctx);

/* Session tickets (TLS 1.3, and 1.2): a returning client resumes with a
 * ticket instead of a full handshake. A key is 16 bytes of name, 32 of
 * AES-256 key and 32 of HMAC-SHA256 key (OpenSSL's ticket format). */
#define TETHER_TLS_TICKET_KEY_SIZE 80u
#define TETHER_TLS_MAX_TICKET_KEYS 4u

struct tether_tls_ticket_key {
        uint8_t bytes[TETHER_TLS_TICKET_KEY_SIZE];
};

/* Server: issues one ticket per handshake, sealed with keys[0]; a ticket
 * sealed with any of keys[1..n-1] (earlier keys, kept during a rotation)
 * is still accepted and replaced by one under keys[0]. A ticket is
 * accepted for lifetime_sec after the full handshake it came from. The
 * keys are copied. n == 0 turns tickets off again (the default: every
 * connection a full handshake). Resumption keeps the client certificate
 * of the full handshake: tether_tls_peer_key() is the same key. */
int tether_tls_server_set_ticket_keys(struct tether_tls_ctx *ctx, const struct tether_tls_ticket_key *keys,
                                      size_t n, uint32_t lifetime_sec);

/* Client contexts keep the last ticket the server sent and offer it on the
 * next connection to the same server name, so a reconnecting client
 * resumes. The context is then used from one thread at a time. This drops
 * the kept ticket: the next connection is a full handshake. */
void tether_tls_client_forget_session(struct tether_tls_ctx *ctx);

/* One connection over fd (not owned: the caller closes it after freeing). */
struct tether_tls_conn;

int tether_tls_conn_new(struct tether_tls_ctx *ctx, int fd, const char *server_name,
                        struct tether_tls_conn **ret);
struct tether_tls_conn *tether_tls_conn_free(struct tether_tls_conn *conn);

enum tether_tls_want {
        TETHER_TLS_WANT_NONE = 0,
        TETHER_TLS_WANT_READ = 1,
        TETHER_TLS_WANT_WRITE = 2,
};

/* Drives the handshake. Returns 1 when done, 0 when it must be called again
 * once *ret_want is satisfied, -ECONNREFUSED/-EPROTO/-EPERM (verification
 * failed; tether_tls_conn_error() says why). */
int tether_tls_handshake(struct tether_tls_conn *conn, enum tether_tls_want *ret_want);

/* Returns bytes read (> 0), 0 on a clean close by the peer, -EAGAIN with
 * *ret_want set, or another negative errno. */
ssize_t tether_tls_read(struct tether_tls_conn *conn, void *buf, size_t len, enum tether_tls_want *ret_want);

/* Returns bytes written (> 0), -EAGAIN with *ret_want set, or an error. */
ssize_t tether_tls_write(struct tether_tls_conn *conn, const void *buf, size_t len,
                         enum tether_tls_want *ret_want);

/* True when OpenSSL holds decrypted bytes not yet read (poll won't say). */
bool tether_tls_pending(const struct tether_tls_conn *conn);

/* The peer's certificate public key, owned by the caller; -ENOENT if none. */
int tether_tls_peer_key(const struct tether_tls_conn *conn, struct tether_key **ret);
/* Names the peer certificate's key for a log line ("RSA of 1024 bits"),
 * so that a key the protocol refuses is told apart from no certificate.
 * -ENOENT: the peer sent no certificate. */
int tether_tls_peer_key_name(const struct tether_tls_conn *conn, char *buf, size_t size);

/* True once the handshake resumed an earlier session (a ticket). */
bool tether_tls_conn_resumed(const struct tether_tls_conn *conn);

/* The last error, for logs ("certificate verify failed: ..."). */
const char *tether_tls_conn_error(const struct tether_tls_conn *conn);

/* Sends close_notify, best effort. */
void tether_tls_shutdown(struct tether_tls_conn *conn);
