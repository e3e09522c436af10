/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Inside the console (mp/console.c, mp/api*.c): one REST request, its
 * caller, and the answer helpers. Not for use outside those files.
 *
 * Every answer carries the strict security headers (Content-Security-
 * Policy, nosniff, no-store...). Errors are {"error": "..."} with a 4xx/5xx.
 */

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>
#include <microhttpd.h>
#include <systemd/sd-event.h>

#include "mp/auth.h"
#include "mp/rbac.h"

struct mp_server;
struct sse_stream;

/* The console (mp/console.h), shared by its files. */
struct mp_console {
        struct mp_server *srv;
        struct MHD_Daemon *mhd;
        sd_event_source *io, *timer;
        struct mp_auth *auth;
        int fd;
        uint16_t port;
        char *webroot;
        /* server-sent events (mp/console-events.c) */
        struct sse_stream *streams;
        sd_event_source *sse_timer;
        json_object *offline_reasons; /* ClientID -> why it went offline */
        json_object *progress;        /* PushIDs advanced since the last tick */
        uint64_t last_ping_usec;
};

#define API_MAX_BODY (64u * 1024u)
#define API_MAX_PAGE 500
#define API_COOKIE "tether_session"

struct api_req {
        struct mp_console *con;
        struct mp_server *srv;
        struct MHD_Connection *mc;
        const char *method, *url;
        char *body;
        size_t body_len;
        bool body_too_big;
        char address[64];
        /* the caller, once authenticated */
        char *user;
        struct mp_principal *who;
        bool via_session; /* a cookie (CSRF applies), not a bearer token */
        bool queued;
};

struct mp_auth *api_auth(struct api_req *q);
const char *api_webroot(struct api_req *q); /* NULL: none installed */
/* Queues resp with the security headers (takes it). */
int api_queue(struct api_req *q, unsigned status, struct MHD_Response *resp);

/* Queues the answer (at most one per request). */
int api_json(struct api_req *q, unsigned status, json_object *o, const char *extra_header,
             const char *extra_value);
int api_error(struct api_req *q, unsigned status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* A failure of the records: 503 while the database is unreachable. */
int api_store_error(struct api_req *q, const char *what, int r);
/* Serves a static file of the web console (GET only). */
int api_static(struct api_req *q);

/* The JSON body: a strict object with only the allowed keys ("name"
 * followed by its json_type as a char: s string, i int, b bool, a array,
 * o object), NULL-terminated. 4xx answered (and -EINVAL returned) on a
 * wrong content type, malformed JSON or an unknown or mistyped field. */
int api_body(struct api_req *q, json_object **ret, const char *const *allowed);
/* A query parameter, or NULL. */
const char *api_query(struct api_req *q, const char *key);

/* Authenticates (session cookie + CSRF on writes, or bearer token); 401 or
 * 403 answered when not. */
int api_authenticate(struct api_req *q);
/* Appends an audit record for this request's caller and commits it with
 * the store's open transaction. */
int api_audit(struct api_req *q, const char *action, const char *target, const char *outcome,
              const char *detail);
/* 403 with the reason, audited as "denied". */
int api_deny(struct api_req *q, const char *action, const char *target, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* mp/api.c: routes a request under /api/v1/. */
int api_dispatch(struct api_req *q);
/* mp/api-devices.c */
int api_devices_list(struct api_req *q);
int api_device_get(struct api_req *q, const char *id);
int api_action(struct api_req *q, const char *device_id);
int api_push_get(struct api_req *q, const char *id);
int api_approvals_list(struct api_req *q);
int api_approval_decide(struct api_req *q, const char *id);
/* mp/api-users.c: accounts and their grants (users.manage) */
int api_users(struct api_req *q);
int api_user_add(struct api_req *q);
int api_user_grants(struct api_req *q, const char *name);
int api_user_delete(struct api_req *q, const char *name);
int api_password_change(struct api_req *q);
int api_token_delete(struct api_req *q, const char *id);
/* Fills the devices the caller may read, each with its online state (and
 * why it went offline, when known). */
int api_visible_devices(struct api_req *q, json_object **ret);
int api_devices_for(struct mp_server *srv, const struct mp_principal *who, json_object **ret);
/* The same in two steps: every device with its online state (read once a
 * tick for all event streams), then the rows one caller may read (shared
 * references). */
int api_devices_all(struct mp_server *srv, json_object **ret);
int api_devices_filter(json_object *all, const struct mp_principal *who, json_object **ret);

/* mp/console.c: runs MHD now (after queuing event data) */
void console_run(struct mp_console *con);
/* mp/console-events.c: GET /api/v1/events, and the streams' upkeep */
int api_events(struct api_req *q);
int console_events_init(struct mp_console *con);
void console_events_stop(struct mp_console *con); /* before MHD_stop_daemon */
void console_events_done(struct mp_console *con);
