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

/* The last error, for logs ("certificate verify failed: ..."). */
const char *tether_tls_conn_error(const struct tether_tls_conn *conn);

/* Sends close_notify, best effort. */
void tether_tls_shutdown(struct tether_tls_conn *conn);
