/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * tether-mp's internals, shared by its files (not a public interface).
 *
 * One struct mp_server owns everything: the sd-event loop, the listeners,
 * the registry, the connections, the online sessions and the pushes in
 * flight. No globals beyond log state.
 *
 *   server.c   setup, listeners, the sweep timer, group commit and flush
 *   conn.c     one non-blocking connection: TLS (or plain, for the admin
 *              socket), read loop, output queue of shared buffers
 *   channel.c  the frame protocol: sign-in, sessions, PUSH_ACK, RESPONSE,
 *              KEEPALIVE; shared by the TCP channel and the HTTPS fallback
 *   push.c     creating pushes and their throttled fan-out
 *   dupguard.c counting live replacements per ClientID: two devices
 *              behind one identity (mp/dupguard.h)
 *   http.c     HTTP/1.1 over a connection with http-parser; the HTTPS
 *              endpoints (fallback channel, policies)
 *   admin.c    the admin API (HTTP+JSON on a unix socket)
 *   state.c    the state directory: site key, TLS key and certificate
 *   config.c   defaults, the INI file, the command line
 *   cli.c      the admin commands (libcurl client)
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <http_parser.h>
#include <systemd/sd-event.h>

#include "mp/dupguard.h"
#include "mp/registry.h"
#include "mp/util.h"
#include "mp/throttle.h"
#include "transport/frame.h"
#include "transport/guid.h"
#include "transport/message.h"

struct tether_key;
struct tether_tls_ctx;
struct tether_tls_conn;

#define MP_MAX_TLS_NAMES 16
#define MP_HOLD_DEFAULT 50
#define MP_HOLD_MAX 300
#define MP_HTTP_MAX_BODY (8u * 1024u * 1024u)
#define MP_HANDSHAKE_TIMEOUT_USEC (10ULL * 1000000ULL)

struct mp_config {
        char *state_dir;
        char *store;        /* NULL: <state_dir>/tether-mp.db (SQLite); or a postgresql:// URL */
        char *node_id;      /* NULL: <state_dir>/node-id (made at first start) */
        char *listen;       /* "ADDR:PORT" */
        char *https_listen; /* "ADDR:PORT", "" or "off" disables */
        char *admin_socket;
        char *admin_group; /* NULL: socket 0600; else 0660 with this group */
        enum mp_approval_mode approval;
        char *token;
        char *policy_dir;
        char *tls_names[MP_MAX_TLS_NAMES];
        unsigned n_tls_names;
        uint32_t keepalive;
        uint32_t push_rate;
        uint32_t push_batch;
        uint32_t push_expires;
        uint32_t max_frame;
        uint32_t shutdown_reconnect_rate; /* sign-ins a second the fleet may come back at */
        uint32_t max_connections;         /* TCP channels; above: GOODBYE(overloaded). 0: no limit */
        uint32_t overload_retry_after;    /* its RetryAfterSeconds */
        bool verbose;
};

void mp_config_init(struct mp_config *c);
void mp_config_done(struct mp_config *c);
/* Loads an INI file over the current values; a bad value is logged with
 * file and line and the previous value kept. -ENOENT if missing. */
int mp_config_load(struct mp_config *c, const char *path);
int mp_config_set(struct mp_config *c, const char *key, const char *value); /* -EINVAL, -ENOENT */

/* A reference-counted byte buffer: one signed PUSH frame is queued on
 * thousands of connections without a copy. */
struct mp_buf {
        unsigned ref;
        size_t len;
        uint8_t data[];
};

struct mp_buf *mp_buf_new(const void *data, size_t len);
struct mp_buf *mp_buf_take(uint8_t *data, size_t len); /* copies and frees data */
struct mp_buf *mp_buf_ref(struct mp_buf *b);
void mp_buf_unref(struct mp_buf *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct mp_buf *, mp_buf_unref)

struct mp_out {
        struct mp_out *next;
        struct mp_buf *buf;
        size_t off;
};

enum mp_conn_kind {
        MP_CONN_CHANNEL,
        MP_CONN_HTTPS,
        MP_CONN_ADMIN,
};

struct mp_http;
struct mp_session;

struct mp_conn {
        struct mp_server *srv;
        enum mp_conn_kind kind;
        unsigned ref;
        int fd;
        sd_event_source *io;
        uint32_t io_events;
        struct tether_tls_conn *tls; /* NULL on the admin socket */
        bool handshake_done;
        bool want_write; /* the last TLS call asked for writability */
        bool close_after_flush;
        bool dead;
        bool in_flush_list;
        char peer[80]; /* "address:port" for logs */
        char address[64];
        uint64_t created_usec;
        uint64_t last_rx_usec;
        struct tether_key *peer_key; /* the TLS client certificate's key */

        struct mp_out *out_head, *out_tail;
        size_t out_bytes;

        struct mp_conn *prev, *next; /* srv->conns */
        struct mp_conn *flush_next;  /* srv->flush_list */

        /* the frame channel */
        struct tether_frame_decoder *dec;
        uint64_t frame_start_usec;
        struct mp_session *session;

        /* HTTPS and admin */
        struct mp_http *http;
};

/* A device that is online: its TCP channel, or its HTTPS polls. */
struct mp_session {
        char client_id[TETHER_GUID_LEN];
        char *hostname;
        struct tether_key *key;
        enum mp_device_status status;
        struct mp_conn *conn; /* TCP channel, or the held HTTPS poll; NULL between polls */
        bool https;
        uint64_t last_seen_usec;
        char address[64];
};

struct mp_push {
        struct mp_push *next;
        struct mp_server *srv;
        uint64_t push_id;
        uint64_t task_id;
        char task_guid[TETHER_GUID_LEN];
        uint32_t task_type;
        char *task_param;
        time_t expires;
        struct mp_buf *frame;
        char **targets;
        size_t n_targets;
        size_t next_target;
        struct mp_throttle throttle;
        sd_event_source *timer;
        uint64_t started_usec;
        size_t sent;
};

/* An admin request waiting for a push to finish (push-status --wait). */
struct mp_waiter {
        struct mp_waiter *next;
        struct mp_conn *conn;
        uint64_t push_id;
        uint64_t deadline_usec;
        bool dirty;
};

struct mp_server {
        struct mp_config *cfg;
        sd_event *event;
        struct mp_registry *reg;
        struct mp_dupguard *dupguard; /* live replacements per ClientID */
        struct mp_approval_policy approval;
        struct tether_key *site_key;
        char *site_key_b64;
        char site_fingerprint[65];
        struct tether_key *tls_key;
        struct tether_tls_ctx *tls;

        int channel_fd, https_fd, admin_fd;
        sd_event_source *channel_src, *https_src, *admin_src;
        sd_event_source *sweep_src, *flush_src;
        sd_event_source *sigterm_src, *sigint_src;
        uint16_t channel_port, https_port;

        struct mp_conn *conns;
        size_t n_conns;
        size_t n_channel_conns;
        struct mp_conn *flush_list;
        size_t flush_count;
        uint64_t flush_first_usec;

        void *sessions; /* tsearch tree of struct mp_session */
        size_t n_sessions;

        struct mp_push *pushes; /* fan-outs in progress */
        struct mp_waiter *waiters;

        /* SIGNIN_CONFIRM(Approved) is the same bytes for everyone within one
         * second: sign it once. */
        struct mp_buf *confirm_cache;
        time_t confirm_cache_time;

        bool shutting_down;
        /* True while mp_server_flush writes out what was queued before its
         * commit: closes in that loop write last-seen times, which must not
         * hold back the other connections' already durable output. */
        bool writing_committed;
        uint64_t last_expire_usec;
        struct mp_cluster *cluster; /* NULL with one node (SQLite) */
};

uint64_t mp_now_usec(void);

/* server.c */
int mp_server_new(struct mp_config *cfg, struct mp_server **ret);
struct mp_server *mp_server_free(struct mp_server *srv);
int mp_server_run(struct mp_server *srv);
/* Queues conn for the next flush (after the group commit). */
void mp_server_want_flush(struct mp_server *srv, struct mp_conn *conn);
/* Commits and writes out every queued connection now. */
void mp_server_flush(struct mp_server *srv);
void mp_server_push_progress(struct mp_server *srv, uint64_t push_id);

/* conn.c */
int mp_conn_new(struct mp_server *srv, enum mp_conn_kind kind, int fd, const struct sockaddr *sa,
                socklen_t salen, struct mp_conn **ret);
struct mp_conn *mp_conn_ref(struct mp_conn *c);
void mp_conn_unref(struct mp_conn *c);
/* Queues bytes (a new reference is taken). */
int mp_conn_send(struct mp_conn *c, struct mp_buf *buf);
int mp_conn_send_bytes(struct mp_conn *c, const void *data, size_t len);
/* Writes what it can now; returns < 0 when the connection failed. */
int mp_conn_flush(struct mp_conn *c);
/* Closes at once (idempotent); the struct lives on while referenced. */
void mp_conn_close(struct mp_conn *c, const char *why);
/* Closes once the output queue has drained. */
void mp_conn_close_after_flush(struct mp_conn *c);

/* channel.c */
int mp_channel_input(struct mp_conn *c, const uint8_t *data, size_t len);
void mp_channel_closed(struct mp_conn *c);
/* Builds a GOODBYE frame (to share among many connections). */
int mp_channel_goodbye_frame(struct mp_server *srv, enum tether_goodbye_reason reason, uint32_t retry_after,
                             struct mp_buf **ret);
/* Sends a GOODBYE frame (nothing else follows). */
int mp_channel_goodbye(struct mp_conn *c, enum tether_goodbye_reason reason, uint32_t retry_after);
/* Builds a SIGNIN_CONFIRM for a status. */
int mp_channel_confirm(struct mp_server *srv, enum tether_signin_status status, struct mp_buf **ret);

/* The outcome of a verified SIGNIN, shared by both transports. */
enum mp_signin_outcome {
        MP_OUTCOME_APPROVED,
        MP_OUTCOME_PENDING,
        MP_OUTCOME_REJECTED,
        MP_OUTCOME_CONFLICT,
        MP_OUTCOME_DUPLICATE, /* a second device with this identity: GOODBYE(conflict) too */
        MP_OUTCOME_UNAUTHORIZED,
        MP_OUTCOME_PROTOCOL_ERROR,
};
/* How a SIGNIN arrived: a TCP channel and a held HTTPS poll each claim the
 * device's one connection; a poll answered at once (hold=0, the agent's
 * first poll and its side requests) only passes through. */
enum mp_signin_via {
        MP_VIA_CHANNEL,
        MP_VIA_LONG_POLL,
        MP_VIA_QUICK_POLL,
};
/* Verifies and decides a SIGNIN frame received on c; on APPROVED, PENDING
 * or REJECTED, *ret_session is the device's session (created or reused).
 * A channel or long poll replaces the device's live connection, unless the
 * duplicate-identity guard refuses it (MP_OUTCOME_DUPLICATE, recorded); a
 * quick poll leaves a held poll in place (the caller must not take over
 * s->conn then: see mp_signin_takes_over). */
int mp_signin(struct mp_conn *c, const struct tether_frame *frame, enum mp_signin_via via,
              enum mp_signin_outcome *ret, struct mp_session **ret_session);
/* Whether a signed-in connection arriving via `via` becomes s->conn. */
bool mp_signin_takes_over(const struct mp_session *s, enum mp_signin_via via);
/* Handles PUSH_ACK, RESPONSE, KEEPALIVE, GOODBYE of a signed-in session.
 * RESPONSE_ACK or KEEPALIVE answers go to *acks (appended) when acks is
 * not NULL, else straight to the connection. Returns < 0 on a protocol error
 * (diag filled). */
int mp_session_frame(struct mp_session *s, struct mp_conn *c, const struct tether_frame *frame,
                     struct mp_buf ***acks, size_t *n_acks, struct tether_diag *diag);
struct mp_session *mp_session_find(struct mp_server *srv, const char *client_id);
void mp_session_drop(struct mp_server *srv, struct mp_session *s);
bool mp_session_online(struct mp_server *srv, const struct mp_session *s, uint64_t now);
/* An administrator approved or rejected the device: tell it if online. */
void mp_session_decided(struct mp_server *srv, const char *client_id, enum mp_device_status status);
/* Sends every undelivered push to the session's connection (TCP). */
int mp_session_deliver_backlog(struct mp_server *srv, struct mp_session *s);
void mp_sessions_walk(struct mp_server *srv, void (*fn)(struct mp_session *s, void *u), void *u);

/* cluster.c: several nodes on one PostgreSQL database */
struct mp_cluster;
int mp_cluster_node_id(const struct mp_config *cfg, char **ret);
int mp_cluster_start(struct mp_server *srv, struct mp_cluster **ret);
/* The fan-out rate of this node: PushRate, shared among the nodes alive. */
uint32_t mp_cluster_push_rate(const struct mp_server *srv);
struct mp_cluster *mp_cluster_free(struct mp_cluster *cl);

/* push.c */
struct mp_push_request {
        uint32_t task_type;
        const char *task_param;
        uint32_t expires_seconds;
        bool all;
        char **targets;
        size_t n_targets;
};
int mp_push_start(struct mp_server *srv, const struct mp_push_request *req, uint64_t *ret_push_id,
                  char ret_guid[TETHER_GUID_LEN], size_t *ret_n_targets);
void mp_push_free_all(struct mp_server *srv);
/* After a lost transaction: stops the fan-outs whose push was not stored. */
void mp_push_drop_unstored(struct mp_server *srv);

/* http.c */
int mp_http_attach(struct mp_conn *c);
void mp_http_free(struct mp_conn *c);
int mp_http_input(struct mp_conn *c, const uint8_t *data, size_t len);
/* Queues a whole response; the request is then finished. */
int mp_http_respond(struct mp_conn *c, unsigned status, const char *content_type, const char *extra_headers,
                    struct mp_buf *body);
int mp_http_respond_text(struct mp_conn *c, unsigned status, const char *text);
/* The held fallback poll is answered now (something arrived, or time). */
int mp_https_finish_poll(struct mp_conn *c);
bool mp_http_held(const struct mp_conn *c);
uint64_t mp_http_hold_deadline(const struct mp_conn *c);

/* admin.c */
int mp_admin_request(struct mp_conn *c, int method, const char *path, const char *query, const uint8_t *body,
                     size_t body_len);
void mp_admin_check_waiters(struct mp_server *srv, bool all);
void mp_admin_conn_closed(struct mp_server *srv, struct mp_conn *c);

/* state.c */
int mp_state_load(const struct mp_config *cfg, bool create, struct tether_key **ret_site_key,
                  struct tether_key **ret_tls_key, char **ret_tls_cert_pem);

/* cli.c */
int mp_cli_main(const char *command, int argc, char **argv);
