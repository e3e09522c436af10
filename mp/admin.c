/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API: HTTP+JSON on a unix socket (0600, or 0660 for a group),
 * parsed by http-parser (http.c) and json-c. The CLI (cli.c) is its client.
 *
 *   GET  /v1/status                    server figures
 *   GET  /v1/devices                   devices with online state
 *   POST /v1/devices/<id>/approve      an administrator's decision
 *   POST /v1/devices/<id>/reject
 *   GET  /v1/conflicts                 recorded conflicts (another key; a shared identity)
 *   POST /v1/pushes                    {"type":1,"param":"","expires":3600,"all":true|"targets":[...]}
 *   GET  /v1/pushes/<id>[?wait=S]      per-device state; wait holds until done
 *   GET  /v1/responses[?limit=N]       recent responses, newest first
 *   GET  /v1/site-key                  fingerprint and PEM
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/console.h"
#include "mp/mp.h"
#include "transport/rotation.h"
#include "transport/sign.h"

static int respond_json(struct mp_conn *c, unsigned status, json_object *obj) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = NULL;
        const char *text;
        size_t len = 0;

        text = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
        if (!text)
                return -ENOMEM;
        b = mp_buf_new(text, len);
        if (!b)
                return -ENOMEM;
        /* the trailing newline helps people using curl by hand */
        return mp_http_respond(c, status, "application/json", NULL, b);
}

static int respond_error(struct mp_conn *c, unsigned status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int respond_error(struct mp_conn *c, unsigned status, const char *fmt, ...) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "error", json_object_new_string(msg));
        return respond_json(c, status, o);
}

/* A failure of the records: a database that is down is said so, with 503,
 * so that the administrator retries later rather than reading a bug. */
static int store_error(struct mp_conn *c, const char *what, int r) {
        if (r == -ENOTCONN || r == -ECONNABORTED)
                return respond_error(c, 503,
                                     "%s: the records' database is unreachable (reconnecting); nothing was "
                                     "done, try again later",
                                     what);
        return respond_error(c, 500, "%s: %s", what, strerror(-r));
}

static const char *query_get(const char *query, const char *key, char *buf, size_t size) {
        size_t klen = strlen(key);

        for (const char *q = query; q && *q;) {
                const char *end = strchrnul(q, '&');

                if (strncmp(q, key, klen) == 0 && q[klen] == '=') {
                        size_t n = (size_t)(end - q - (ptrdiff_t)klen - 1);
                        if (n >= size)
                                return NULL;
                        memcpy(buf, q + klen + 1, n);
                        buf[n] = 0;
                        return buf;
                }
                q = *end ? end + 1 : end;
        }
        return NULL;
}

struct overlay_ctx {
        struct mp_server *srv;
        uint64_t now;
        json_object *by_id;
};

static int admin_devices(struct mp_conn *c) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *arr = NULL, *out = NULL;
        uint64_t now = mp_now_usec();
        time_t wall = time(NULL);
        int r;

        r = mp_registry_devices_json(srv->reg, &arr);
        if (r < 0)
                return store_error(c, "registry", r);
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *row = json_object_array_get_idx(arr, i), *v;
                struct mp_session *s = NULL;
                bool online = false;

                if (json_object_object_get_ex(row, "client_id", &v))
                        s = mp_session_find(srv, json_object_get_string(v));
                if (s)
                        online = mp_session_online(srv, s, now);
                json_object_object_add(row, "online", json_object_new_boolean(online));
                /* refusing a second device with this identity right now */
                if (json_object_object_get_ex(row, "client_id", &v))
                        json_object_object_add(row, "duplicate_identity",
                                               json_object_new_boolean(mp_dupguard_flagged(
                                                       srv->dupguard, json_object_get_string(v), now)));
                if (s && online) {
                        char ts[TETHER_TIMESTAMP_LEN];
                        time_t seen = wall - (time_t)((now - s->last_seen_usec) / 1000000ULL);

                        json_object_object_add(row, "transport",
                                               json_object_new_string(s->https ? "https" : "tcp"));
                        /* an HTTPS poll waiting for something to answer */
                        json_object_object_add(
                                row, "held", json_object_new_boolean(s->https && s->conn && !s->conn->dead));
                        if (tether_timestamp_format(seen, ts) >= 0)
                                json_object_object_add(row, "last_seen", json_object_new_string(ts));
                        json_object_object_add(row, "address", json_object_new_string(s->address));
                }
        }
        out = json_object_new_object();
        if (!out)
                return -ENOMEM;
        json_object_object_add(out, "devices", TAKE_PTR(arr));
        return respond_json(c, 200, out);
}

static int admin_decide(struct mp_conn *c, const char *client_id, enum mp_device_status status) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *o = NULL;
        int r;

        r = mp_registry_set_status(srv->reg, client_id, status);
        if (r == -ENOENT)
                return respond_error(c, 404, "no device with ClientID '%s'", client_id);
        if (r < 0)
                return store_error(c, "registry", r);
        log_info("Administrator set client '%s' to %s", client_id, mp_device_status_name(status));
        mp_session_decided(srv, client_id, status);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "client_id", json_object_new_string(client_id));
        json_object_object_add(o, "status", json_object_new_string(mp_device_status_name(status)));
        return respond_json(c, 200, o);
}

static int admin_push(struct mp_conn *c, const uint8_t *body, size_t len) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *req = NULL, *o = NULL;
        struct json_tokener *tok;
        json_object *v, *targets = NULL;
        struct mp_push_request pr = {0};
        char guid[TETHER_GUID_LEN];
        uint64_t push_id;
        size_t n = 0;
        int r;

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        req = json_tokener_parse_ex(tok, (const char *)body, (int)len);
        json_tokener_free(tok);
        if (!req || !json_object_is_type(req, json_type_object))
                return respond_error(c, 400, "the body must be a JSON object");

        if (!json_object_object_get_ex(req, "type", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 1 || json_object_get_int64(v) > 65535)
                return respond_error(c, 400, "'type' must be a TaskType number (1, 2 or 3)");
        pr.task_type = (uint32_t)json_object_get_int64(v);
        if (json_object_object_get_ex(req, "param", &v) && !json_object_is_type(v, json_type_null))
                pr.task_param = json_object_get_string(v);
        if (json_object_object_get_ex(req, "expires", &v)) {
                int64_t e = json_object_get_int64(v);
                if (e < 1 || e > 30LL * 86400)
                        return respond_error(c, 400, "'expires' must be 1 .. 2592000 seconds");
                pr.expires_seconds = (uint32_t)e;
        }
        if (json_object_object_get_ex(req, "all", &v))
                pr.all = json_object_get_boolean(v);
        if (json_object_object_get_ex(req, "targets", &targets)) {
                if (!json_object_is_type(targets, json_type_array))
                        return respond_error(c, 400, "'targets' must be an array of ClientIDs");
                n = json_object_array_length(targets);
        }
        if (pr.all == (n > 0))
                return respond_error(c, 400, "give either \"all\": true or a non-empty 'targets' list");

        _cleanup_(freep) char **ids = calloc(n ? n : 1, sizeof(char *));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                ids[i] = (char *)json_object_get_string(json_object_array_get_idx(targets, i));
        pr.targets = ids;
        pr.n_targets = n;

        size_t n_targets = 0;
        r = mp_push_start(srv, &pr, &push_id, guid, &n_targets);
        if (r == -ENOENT)
                return respond_error(c, 404, "a target is not a known device");
        if (r == -EINVAL)
                return respond_error(c, 400, "a target is not a ClientID GUID, or the TaskType is invalid");
        if (r < 0)
                return store_error(c, "push failed", r);

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "push_id", json_object_new_int64((int64_t)push_id));
        json_object_object_add(o, "task_guid", json_object_new_string(guid));
        json_object_object_add(o, "targets", json_object_new_int64((int64_t)n_targets));
        return respond_json(c, 200, o);
}

static int push_status_respond(struct mp_conn *c, uint64_t push_id, bool *ret_done) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        int r;

        r = mp_registry_push_json(c->srv->reg, push_id, time(NULL), &o, ret_done);
        if (r == -ENOENT)
                return respond_error(c, 404, "no push with PushID %llu", (unsigned long long)push_id);
        if (r < 0)
                return store_error(c, "registry", r);
        return respond_json(c, 200, o);
}

static int admin_push_status(struct mp_conn *c, const char *id, const char *query) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *o = NULL;
        char buf[32];
        uint64_t push_id, wait = 0;
        bool done = false;
        int r;

        if (parse_u64(id, 1, UINT64_MAX, &push_id) < 0)
                return respond_error(c, 400, "bad PushID '%s'", id);
        if (query_get(query, "wait", buf, sizeof(buf)) && parse_u64(buf, 0, 86400, &wait) < 0)
                return respond_error(c, 400, "bad wait");
        if (wait == 0)
                return push_status_respond(c, push_id, NULL);

        /* Check it exists and whether it is already done. */
        r = mp_registry_push_json(srv->reg, push_id, time(NULL), &o, &done);
        if (r == -ENOENT)
                return respond_error(c, 404, "no push with PushID %llu", (unsigned long long)push_id);
        if (r < 0)
                return store_error(c, "registry", r);
        if (done)
                return respond_json(c, 200, o);

        struct mp_waiter *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->conn = mp_conn_ref(c);
        w->push_id = push_id;
        w->deadline_usec = mp_now_usec() + wait * 1000000ULL;
        w->next = srv->waiters;
        srv->waiters = w;
        return 0;
}

static void waiter_free(struct mp_waiter *w) {
        mp_conn_unref(w->conn);
        free(w);
}

void mp_admin_conn_closed(struct mp_server *srv, struct mp_conn *c) {
        for (struct mp_waiter **pw = &srv->waiters; *pw;) {
                struct mp_waiter *w = *pw;
                if (w->conn == c) {
                        *pw = w->next;
                        waiter_free(w);
                } else {
                        pw = &w->next;
                }
        }
}

void mp_server_push_progress(struct mp_server *srv, uint64_t push_id) {
        mp_console_push_progress(srv->console, push_id);
        for (struct mp_waiter *w = srv->waiters; w; w = w->next)
                if (w->push_id == push_id)
                        w->dirty = true;
}

void mp_admin_check_waiters(struct mp_server *srv, bool all) {
        uint64_t now = mp_now_usec();

        for (struct mp_waiter **pw = &srv->waiters; *pw;) {
                struct mp_waiter *w = *pw;
                _cleanup_(json_object_putp) json_object *o = NULL;
                bool done = false, timed_out = now >= w->deadline_usec;

                if (!all && !w->dirty && !timed_out) {
                        pw = &w->next;
                        continue;
                }
                w->dirty = false;
                if (mp_registry_push_json(srv->reg, w->push_id, time(NULL), &o, &done) < 0) {
                        done = true;
                        o = NULL;
                }
                if (!done && !timed_out) {
                        pw = &w->next;
                        continue;
                }
                *pw = w->next;
                if (o) {
                        json_object_object_add(o, "timed_out", json_object_new_boolean(!done));
                        (void)respond_json(w->conn, 200, o);
                } else {
                        (void)respond_error(w->conn, 500, "registry failure");
                }
                waiter_free(w);
        }
}

static int admin_simple(struct mp_conn *c, int (*fn)(struct mp_registry *, json_object **),
                        const char *key) {
        _cleanup_(json_object_putp) json_object *arr = NULL, *o = NULL;
        int r;

        r = fn(c->srv->reg, &arr);
        if (r < 0)
                return store_error(c, "registry", r);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, key, TAKE_PTR(arr));
        return respond_json(c, 200, o);
}

static int admin_responses(struct mp_conn *c, const char *query) {
        _cleanup_(json_object_putp) json_object *arr = NULL, *o = NULL;
        char buf[32];
        uint64_t limit = 20;
        int r;

        if (query_get(query, "limit", buf, sizeof(buf)) && parse_u64(buf, 1, 100000, &limit) < 0)
                return respond_error(c, 400, "bad limit");
        r = mp_registry_responses_json(c->srv->reg, (unsigned)limit, &arr);
        if (r < 0)
                return store_error(c, "registry", r);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "responses", TAKE_PTR(arr));
        return respond_json(c, 200, o);
}

static void count_online(struct mp_session *s, void *u) {
        size_t *n = u;

        (void)s;
        (*n)++;
}

static int admin_status(struct mp_conn *c) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        size_t sessions = 0;

        if (!o)
                return -ENOMEM;
        mp_sessions_walk(srv, count_online, &sessions);
        json_object_object_add(o, "connections", json_object_new_int64((int64_t)srv->n_conns));
        json_object_object_add(o, "channel_connections",
                               json_object_new_int64((int64_t)srv->n_channel_conns));
        json_object_object_add(o, "sessions", json_object_new_int64((int64_t)sessions));
        json_object_object_add(o, "unauthenticated_connections",
                               json_object_new_int64((int64_t)srv->n_unauth));
        json_object_object_add(o, "refusing_connections", json_object_new_int64((int64_t)srv->n_overloaded));
        json_object_object_add(o, "https_body_bytes", json_object_new_int64((int64_t)srv->body_bytes));
        json_object_object_add(o, "tcp_port", json_object_new_int(srv->channel_port));
        json_object_object_add(o, "https_port", json_object_new_int(srv->https_port));
        json_object_object_add(o, "site_fingerprint", json_object_new_string(srv->site_fingerprint));
        json_object_object_add(o, "approval",
                               json_object_new_string(mp_approval_mode_name(srv->approval.mode)));
        json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
        return respond_json(c, 200, o);
}

static int site_key_chain_json(struct mp_conn *c, json_object *o);

static int admin_site_key(struct mp_conn *c) {
        struct mp_server *srv = c->srv;
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_(freep) char *pem = NULL;

        if (!o)
                return -ENOMEM;
        if (tether_key_public_pem(srv->site_key, &pem) < 0)
                return respond_error(c, 500, "cannot encode the site key");
        json_object_object_add(o, "fingerprint", json_object_new_string(srv->site_fingerprint));
        json_object_object_add(o, "public_key_pem", json_object_new_string(pem));
        json_object_object_add(o, "public_key", json_object_new_string(srv->site_key_b64));
        return site_key_chain_json(c, o) < 0 ? respond_error(c, 500, "cannot read the site key chain")
                                             : respond_json(c, 200, o);
}

/* Each key of the chain: serial, fingerprint, NotBefore, whether it signs
 * now, and how many devices confirmed it last (section 7.2). */
static int site_key_chain_json(struct mp_conn *c, json_object *o) {
        struct mp_server *srv = c->srv;
        size_t n = tether_site_chain_len(srv->site_chain);
        _cleanup_(freep) uint64_t *counts = calloc(n, sizeof(*counts));
        json_object *arr = json_object_new_array();
        int r;

        if (!counts || !arr) {
                json_object_put(arr);
                return -ENOMEM;
        }
        json_object_object_add(o, "chain", arr);
        r = mp_registry_site_key_counts(srv->reg, counts, n);
        if (r < 0)
                return r;
        json_object_object_add(o, "current_serial", json_object_new_int64(mp_site_serial(srv)));
        for (size_t i = 0; i < n; i++) {
                json_object *k = json_object_new_object();
                char fp[TETHER_FINGERPRINT_LEN] = "", nb[TETHER_TIMESTAMP_LEN] = "";

                if (!k)
                        return -ENOMEM;
                (void)tether_key_fingerprint(tether_site_chain_key(srv->site_chain, i), fp);
                if (i > 0)
                        (void)tether_timestamp_format(tether_site_chain_not_before(srv->site_chain, i), nb);
                json_object_object_add(k, "serial", json_object_new_int64((int64_t)i + 1));
                json_object_object_add(k, "fingerprint", json_object_new_string(fp));
                json_object_object_add(k, "not_before", json_object_new_string(nb));
                json_object_object_add(k, "signing", json_object_new_boolean(i + 1 == mp_site_serial(srv)));
                json_object_object_add(k, "devices_confirmed", json_object_new_int64((int64_t)counts[i]));
                json_object_array_add(arr, k);
        }
        return 0;
}

static int admin_site_key_rotate(struct mp_conn *c, const char *query) {
        struct mp_server *srv = c->srv;
        time_t not_before = time(NULL);
        char err[256] = "", fp[TETHER_FINGERPRINT_LEN] = "", ts[TETHER_TIMESTAMP_LEN] = "", nb[64];
        size_t n;
        int r;

        if (query_get(query, "not_before", nb, sizeof(nb)) && tether_timestamp_parse(nb, &not_before) < 0)
                return respond_error(c, 400, "not_before '%s' is not YYYY-MM-DDTHH:MM:SSZ", nb);
        r = mp_site_key_rotate(srv, not_before, err);
        if (r < 0) {
                log_warning("Site key rotation refused: %s", err);
                return respond_error(c, r == -EINVAL ? 400 : 500, "%s", err);
        }
        n = tether_site_chain_len(srv->site_chain);
        (void)tether_key_fingerprint(tether_site_chain_key(srv->site_chain, n - 1), fp);
        (void)tether_timestamp_format(not_before, ts);
        log_notice("Site key rotated: serial %zu (%s) endorsed by serial %zu, signs from %s; the chain goes "
                   "to every 1.1 agent in SIGNIN_CONFIRM",
                   n, fp, n - 1, ts);
        return admin_site_key(c);
}

int mp_admin_request(struct mp_conn *c, int method, const char *path, const char *query, const uint8_t *body,
                     size_t body_len) {
        char id[128];
        const char *rest;
        int r;

        if (strcmp(path, "/v1/status") == 0 && method == HTTP_GET)
                return admin_status(c);
        if (strcmp(path, "/v1/devices") == 0 && method == HTTP_GET)
                return admin_devices(c);
        if (startswith(path, "/v1/devices/") && method == HTTP_POST) {
                const char *p = path + strlen("/v1/devices/");
                const char *slash = strchr(p, '/');

                if (!slash || (size_t)(slash - p) >= sizeof(id))
                        return respond_error(c, 404, "no such endpoint");
                memcpy(id, p, (size_t)(slash - p));
                id[slash - p] = 0;
                if (strcmp(slash, "/approve") == 0)
                        return admin_decide(c, id, MP_DEVICE_APPROVED);
                if (strcmp(slash, "/reject") == 0)
                        return admin_decide(c, id, MP_DEVICE_REJECTED);
                return respond_error(c, 404, "no such endpoint");
        }
        if (strcmp(path, "/v1/conflicts") == 0 && method == HTTP_GET)
                return admin_simple(c, mp_registry_conflicts_json, "conflicts");
        if (strcmp(path, "/v1/pushes") == 0 && method == HTTP_POST)
                return admin_push(c, body, body_len);
        if (startswith(path, "/v1/pushes/") && method == HTTP_GET) {
                rest = path + strlen("/v1/pushes/");
                return admin_push_status(c, rest, query);
        }
        if (strcmp(path, "/v1/responses") == 0 && method == HTTP_GET)
                return admin_responses(c, query);
        if (strcmp(path, "/v1/site-key") == 0 && method == HTTP_GET)
                return admin_site_key(c);
        if (strcmp(path, "/v1/site-key/rotate") == 0 && method == HTTP_POST)
                return admin_site_key_rotate(c, query);
        if (strcmp(path, "/v1/key-events") == 0 && method == HTTP_GET)
                return admin_simple(c, mp_registry_key_events_json, "key_events");
        r = mp_admin_console_request(c, method, path, body, body_len);
        if (r != -ENOENT)
                return r;
        return respond_error(c, 404, "no such endpoint: %s %s", http_method_str(method), path);
}
