/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PostgreSQL engine of mp/store.h, through libpq. A first version with
 * plain synchronous libpq calls: each is one short statement on an open
 * connection, so the event loop waits one round trip per call.
 *
 * A lost connection is retried with backoff (0.25 s doubling to 30 s);
 * while it is down every call returns -ENOTCONN at once. A failure inside
 * the open transaction (the connection lost, or any statement error, which
 * aborts a PostgreSQL transaction) rolls it back and makes the next
 * commit() return -ECONNABORTED: nothing written since the last commit is
 * stored, so the server must not acknowledge it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "mp/store-pg.h"
#include "mp/store.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000

struct pg_store {
        struct mp_store base;
        PGconn *conn;
        char *conninfo;
        bool in_transaction;
        bool aborted; /* the open transaction was lost; commit() says so */
        bool down;    /* logged once per outage */
        uint64_t retry_at_ms;
        unsigned backoff_ms;
        PGconn *listen; /* LISTEN tether_push: the other nodes' hints */
        uint64_t listen_retry_at_ms;
};

#define PG(st) ((struct pg_store *)(st))

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int connect_now(struct pg_store *s) {
        if (s->conn)
                PQfinish(s->conn);
        s->conn = PQconnectdb(s->conninfo);
        if (!s->conn)
                return -ENOMEM;
        if (PQstatus(s->conn) != CONNECTION_OK)
                return -ENOTCONN;
        /* Quiet the server's NOTICEs ("relation already exists, skipping"). */
        PQclear(PQexec(s->conn, "SET client_min_messages = warning"));
        return 0;
}

/* Reconnects when the connection is down and the backoff has passed. */
static int ensure_conn(struct pg_store *s) {
        uint64_t now;

        if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
                return 0;
        now = now_ms();
        if (now < s->retry_at_ms)
                return -ENOTCONN;
        if (connect_now(s) == 0) {
                if (s->down)
                        log_notice("store: PostgreSQL connection back");
                s->down = false;
                s->backoff_ms = 0;
                return 0;
        }
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS)
                s->backoff_ms = BACKOFF_MAX_MS;
        s->retry_at_ms = now + s->backoff_ms;
        log_warning("store: PostgreSQL unreachable (%s); refusing new work, retrying in %u ms",
                    s->conn ? PQerrorMessage(s->conn) : "out of memory", s->backoff_ms);
        s->down = true;
        return -ENOTCONN;
}

/* After a failed statement: a dead connection is retried later; an open
 * transaction is gone either way. */
static int failed(struct pg_store *s, const char *what, PGresult *res) {
        bool lost = PQstatus(s->conn) != CONNECTION_OK;

        log_error("store: PostgreSQL %s failed: %s", what,
                  res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn));
        PQclear(res);
        if (s->in_transaction) {
                if (!lost)
                        PQclear(PQexec(s->conn, "ROLLBACK"));
                s->in_transaction = false;
                s->aborted = true;
        }
        if (lost) {
                s->down = true;
                s->retry_at_ms = 0; /* the first retry is immediate */
                return -ENOTCONN;
        }
        return -EIO;
}

int pg_exec(struct pg_store *s, const char *what, const char *sql, const struct pg_args *a, PGresult **ret) {
        ExecStatusType st;
        PGresult *res;
        int r;

        r = ensure_conn(s);
        if (r < 0)
                return r;
        /* PQexec for text without parameters: it may hold several statements */
        res = a ? PQexecParams(s->conn, sql, a->n, NULL, a->v, a->len, a->fmt, 0) : PQexec(s->conn, sql);
        st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                return failed(s, what, res);
        if (ret)
                *ret = res;
        else
                PQclear(res);
        return 0;
}

int pg_begin(struct pg_store *s) {
        int r;

        if (s->aborted)
                return -ECONNABORTED; /* until commit() has reported the loss */
        if (s->in_transaction)
                return 0;
        r = pg_exec(s, "BEGIN", "BEGIN", NULL, NULL);
        if (r < 0)
                return r;
        s->in_transaction = true;
        return 0;
}

int pg_write(struct pg_store *s, const char *what, const char *sql, const struct pg_args *a,
             PGresult **ret) {
        int r = pg_begin(s);

        return r < 0 ? r : pg_exec(s, what, sql, a, ret);
}

int pg_commit(struct mp_store *st) {
        struct pg_store *s = PG(st);
        int r;

        if (s->aborted) {
                s->aborted = false;
                return -ECONNABORTED;
        }
        if (!s->in_transaction)
                return 0;
        /* synchronous_commit (on by default): durable when COMMIT returns */
        r = pg_exec(s, "COMMIT", "COMMIT", NULL, NULL);
        if (r < 0) {
                s->aborted = false;
                s->in_transaction = false;
                return -ECONNABORTED;
        }
        s->in_transaction = false;
        return 0;
}

bool pg_dirty(const struct mp_store *st) {
        return ((const struct pg_store *)st)->in_transaction || ((const struct pg_store *)st)->aborted;
}

void pg_arg_str(struct pg_args *a, const char *v) {
        a->v[a->n] = v;
        a->len[a->n] = 0;
        a->fmt[a->n] = 0;
        a->n++;
}

void pg_arg_i64(struct pg_args *a, int64_t v) {
        snprintf(a->buf[a->n], sizeof(a->buf[a->n]), "%" PRId64, v);
        pg_arg_str(a, a->buf[a->n]);
}

void pg_arg_bin(struct pg_args *a, const void *v, size_t len) {
        a->v[a->n] = v;
        a->len[a->n] = (int)len;
        a->fmt[a->n] = 1;
        a->n++;
}

char *pg_str(PGresult *res, int row, int col, bool *oom) {
        char *d;

        if (PQgetisnull(res, row, col))
                return NULL;
        d = strdup(PQgetvalue(res, row, col));
        if (!d)
                *oom = true;
        return d;
}

int64_t pg_i64(PGresult *res, int row, int col) {
        if (PQgetisnull(res, row, col))
                return 0;
        return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A bytea column (text form, "\x..."), unescaped; NUL-terminated so text
 * such as a response's XML can be used as a string. */
uint8_t *pg_bytes(PGresult *res, int row, int col, size_t *ret_len, bool *oom) {
        unsigned char *raw;
        uint8_t *d;
        size_t len = 0;

        *ret_len = 0;
        if (PQgetisnull(res, row, col))
                return NULL;
        raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), &len);
        if (!raw) {
                *oom = true;
                return NULL;
        }
        d = malloc(len + 1);
        if (d) {
                memcpy(d, raw, len);
                d[len] = 0;
                *ret_len = len;
        } else
                *oom = true;
        PQfreemem(raw);
        return d;
}

/* Schema versions: migrations[i] brings version i to i + 1. */
static const char *const migrations[MP_STORE_SCHEMA_VERSION] = {
        "CREATE TABLE devices ("
        " client_id TEXT PRIMARY KEY, hostname TEXT, version TEXT, public_key TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, first_seen BIGINT, last_seen BIGINT,"
        " address TEXT);"
        "CREATE INDEX devices_fpr ON devices (fingerprint);"
        "CREATE TABLE conflicts ("
        " client_id TEXT NOT NULL, known_fingerprint TEXT, offered_fingerprint TEXT NOT NULL,"
        " offered_key TEXT, hostname TEXT, address TEXT, first_seen BIGINT, last_seen BIGINT,"
        " count BIGINT NOT NULL, kind TEXT NOT NULL DEFAULT 'key', established_hostname TEXT,"
        " established_address TEXT, PRIMARY KEY (client_id, offered_fingerprint));"
        "CREATE SEQUENCE push_ids; CREATE SEQUENCE task_ids;"
        "CREATE TABLE pushes ("
        " push_id BIGINT PRIMARY KEY, task_id BIGINT NOT NULL, task_guid TEXT, task_type BIGINT,"
        " task_param TEXT, created BIGINT, expires BIGINT, frame BYTEA);"
        "CREATE INDEX pushes_guid ON pushes (task_guid);"
        "CREATE TABLE targets ("
        " push_id BIGINT NOT NULL, client_id TEXT NOT NULL, state INTEGER NOT NULL, updated BIGINT,"
        " PRIMARY KEY (client_id, push_id));"
        "CREATE INDEX targets_push ON targets (push_id);"
        "CREATE TABLE responses ("
        " client_id TEXT NOT NULL, task_guid TEXT NOT NULL, push_id BIGINT, task_id BIGINT,"
        " return_code BIGINT, detail TEXT, body BYTEA, signature BYTEA, address TEXT, received BIGINT,"
        " seq BIGSERIAL, PRIMARY KEY (client_id, task_guid));"
        "CREATE INDEX responses_received ON responses (received, seq);",
        /* 1 -> 2: which node holds each device (with a session epoch that
         * grows on every sign-in), and which node wrote each push */
        "CREATE TABLE presence (client_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, epoch BIGINT NOT NULL,"
        " since BIGINT, online BOOLEAN NOT NULL DEFAULT true);"
        "ALTER TABLE pushes ADD COLUMN origin_node TEXT;"
        "CREATE INDEX targets_open ON targets (client_id) WHERE state = 0;",
        /* 2 -> 3: the nodes alive, to share the site's push rate */
        "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, seen BIGINT NOT NULL);",
        /* 3 -> 4: key rotation (PROTOCOL-v1 7.2, 7.3): the site key each
         * device confirmed, and the device key events */
        "CREATE TABLE device_site_keys ("
        " client_id TEXT PRIMARY KEY, sent_serial BIGINT NOT NULL, confirmed_serial BIGINT NOT NULL,"
        " updated BIGINT);"
        "CREATE TABLE key_events ("
        " id BIGSERIAL PRIMARY KEY, client_id TEXT NOT NULL, kind TEXT NOT NULL, old_fingerprint TEXT,"
        " new_fingerprint TEXT, reason TEXT, hostname TEXT, address TEXT, at BIGINT);",
        /* 4 -> 5: the console's records (mp/store-pg-admin.c) */
        pg_admin_schema_v5,
};

/* Runs the missing migrations in one transaction, under an advisory lock
 * so that nodes starting together migrate once. */
static int migrate(struct pg_store *s) {
        PGresult *res = NULL;
        int version, r;

        r = pg_write(s, "schema lock",
                     "SELECT pg_advisory_xact_lock(7465746865);"
                     "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                     NULL, NULL);
        if (r >= 0)
                r = pg_exec(s, "schema version", "SELECT coalesce(max(version), 0) FROM schema_version",
                            NULL, &res);
        if (r < 0)
                return r;
        version = (int)pg_i64(res, 0, 0);
        PQclear(res);
        r = mp_store_check_version("PostgreSQL", PQdb(s->conn), version);
        for (int v = version; r >= 0 && v < MP_STORE_SCHEMA_VERSION; v++) {
                struct pg_args a = {};

                r = pg_exec(s, "schema migration", migrations[v], NULL, NULL);
                pg_arg_i64(&a, v + 1);
                if (r >= 0)
                        r = pg_exec(s, "schema version", "DELETE FROM schema_version", NULL, NULL);
                if (r >= 0)
                        r = pg_exec(s, "schema version", "INSERT INTO schema_version VALUES ($1::int)", &a,
                                    NULL);
                if (r >= 0)
                        log_info("store: PostgreSQL database %s migrated to schema version %d",
                                 PQdb(s->conn), v + 1);
        }
        if (r < 0) {
                if (s->in_transaction)
                        PQclear(PQexec(s->conn, "ROLLBACK"));
                s->in_transaction = s->aborted = false;
                return r;
        }
        return pg_commit(&s->base);
}

void pg_free(struct mp_store *st) {
        struct pg_store *s = PG(st);

        if (s->conn) {
                (void)pg_commit(st);
                PQfinish(s->conn);
        }
        if (s->listen)
                PQfinish(s->listen);
        free(s->conninfo);
        free(s);
}

int mp_store_open_pg(const char *conninfo, struct mp_store **ret) {
        struct pg_store *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->base.ops = pg_ops();
        s->conninfo = strdup(conninfo);
        if (!s->conninfo) {
                free(s);
                return -ENOMEM;
        }
        /* At start a database that cannot be reached is an error, not a wait. */
        r = connect_now(s);
        if (r < 0) {
                log_error("store: cannot connect to PostgreSQL: %s",
                          s->conn ? PQerrorMessage(s->conn) : "out of memory");
                pg_free(&s->base);
                return -ENOTCONN;
        }
        r = migrate(s);
        if (r < 0) {
                pg_free(&s->base);
                return r;
        }
        *ret = &s->base;
        return 0;
}

/* The hint channel: a connection of its own that only LISTENs, so hints
 * arrive while the main one sits in a transaction. */
int pg_listen_fd(struct mp_store *st) {
        struct pg_store *s = PG(st);
        PGresult *res;

        if (s->listen && PQstatus(s->listen) == CONNECTION_OK)
                return PQsocket(s->listen);
        if (now_ms() < s->listen_retry_at_ms)
                return -ENOTCONN;
        if (s->listen)
                PQfinish(s->listen);
        s->listen = PQconnectdb(s->conninfo);
        if (!s->listen || PQstatus(s->listen) != CONNECTION_OK)
                goto fail;
        res = PQexec(s->listen, "LISTEN tether_push; LISTEN tether_device");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                PQclear(res);
                goto fail;
        }
        PQclear(res);
        if (PQsetnonblocking(s->listen, 1) < 0)
                goto fail;
        return PQsocket(s->listen);
fail:
        /* the timer still finds the work; the hints come back later */
        s->listen_retry_at_ms = now_ms() + BACKOFF_MAX_MS / 6;
        return -ENOTCONN;
}

int pg_listen_drain(struct mp_store *st, mp_store_hint_cb cb, void *userdata) {
        struct pg_store *s = PG(st);
        PGnotify *n;
        int count = 0;

        if (!s->listen || PQconsumeInput(s->listen) == 0 || PQstatus(s->listen) != CONNECTION_OK) {
                if (s->listen)
                        PQfinish(s->listen);
                s->listen = NULL;
                return -ENOTCONN;
        }
        while ((n = PQnotifies(s->listen))) {
                count++;
                if (cb)
                        cb(n->relname, n->extra, userdata);
                PQfreemem(n);
        }
        return count;
}
