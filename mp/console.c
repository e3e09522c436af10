/* SPDX-License-Identifier: Apache-2.0 */
/* The console's HTTPS listener: libmicrohttpd inside the sd-event loop
 * (mp/console.h says why), requests collected and handed to mp/api.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <systemd/sd-event.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/api.h"
#include "mp/audit.h"
#include "mp/console.h"
#include "mp/mp.h"

static const char *const security_headers[][2] = {
        {"Content-Security-Policy",
         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
         "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-store"},
        {"Strict-Transport-Security", "max-age=31536000"},
};

struct mp_auth *api_auth(struct api_req *q) {
        return q->con->auth;
}

const char *api_webroot(struct api_req *q) {
        return q->con->webroot;
}

static void rearm(struct mp_console *con);

/* Runs MHD until it has nothing ready, then follows its timeout. */
static void run_mhd(struct mp_console *con) {
        if (MHD_run(con->mhd) != MHD_YES)
                log_debug("console: MHD_run failed");
        /* answers write records: make them durable and flush the channels */
        mp_server_flush(con->srv);
        rearm(con);
}

void console_run(struct mp_console *con) {
        run_mhd(con);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void)s;
        (void)fd;
        (void)revents;
        run_mhd(userdata);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void)s;
        (void)usec;
        run_mhd(userdata);
        return 0;
}

static void rearm(struct mp_console *con) {
        MHD_UNSIGNED_LONG_LONG ms = 0;

        if (MHD_get_timeout(con->mhd, &ms) != MHD_YES) {
                (void)sd_event_source_set_enabled(con->timer, SD_EVENT_OFF);
                return;
        }
        (void)sd_event_source_set_time_relative(con->timer, (uint64_t)ms * 1000ULL);
        (void)sd_event_source_set_enabled(con->timer, SD_EVENT_ONESHOT);
}

static void add_security_headers(struct MHD_Response *resp) {
        for (size_t i = 0; i < ELEMENTSOF(security_headers); i++)
                (void)MHD_add_response_header(resp, security_headers[i][0], security_headers[i][1]);
}

int api_queue(struct api_req *q, unsigned status, struct MHD_Response *resp) {
        enum MHD_Result ok;

        if (q->queued) {
                MHD_destroy_response(resp);
                return -EALREADY;
        }
        add_security_headers(resp);
        ok = MHD_queue_response(q->mc, status, resp);
        MHD_destroy_response(resp);
        q->queued = true;
        return ok == MHD_YES ? 0 : -EIO;
}

int api_json(struct api_req *q, unsigned status, json_object *o, const char *extra_header,
             const char *extra_value) {
        struct MHD_Response *resp;
        const char *text;
        size_t len = 0;

        text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
        if (!text)
                return -ENOMEM;
        resp = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return -ENOMEM;
        (void)MHD_add_response_header(resp, "Content-Type", "application/json");
        if (extra_header)
                (void)MHD_add_response_header(resp, extra_header, extra_value);
        return api_queue(q, status, resp);
}

int api_error(struct api_req *q, unsigned status, const char *fmt, ...) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "error", json_object_new_string(msg));
        return api_json(q, status, o, NULL, NULL);
}

int api_store_error(struct api_req *q, const char *what, int r) {
        if (r == -ENOTCONN || r == -ECONNABORTED)
                return api_error(q, 503,
                                 "%s: the records' database is unreachable; nothing was done, try again",
                                 what);
        return api_error(q, 500, "%s: %s", what, strerror(-r));
}

const char *api_query(struct api_req *q, const char *key) {
        return MHD_lookup_connection_value(q->mc, MHD_GET_ARGUMENT_KIND, key);
}

static bool field_allowed(const char *const *allowed, const char *key, json_object *v) {
        static const struct {
                char c;
                json_type t;
        } types[] = {{'s', json_type_string},
                     {'i', json_type_int},
                     {'b', json_type_boolean},
                     {'a', json_type_array},
                     {'o', json_type_object}};

        for (size_t i = 0; allowed && allowed[i]; i++) {
                size_t n = strlen(allowed[i]) - 1;
                if (strncmp(allowed[i], key, n) != 0 || key[n])
                        continue;
                for (size_t k = 0; k < ELEMENTSOF(types); k++)
                        if (types[k].c == allowed[i][n])
                                return json_object_is_type(v, types[k].t);
        }
        return false;
}

int api_body(struct api_req *q, json_object **ret, const char *const *allowed) {
        const char *ct = MHD_lookup_connection_value(q->mc, MHD_HEADER_KIND, "Content-Type");
        struct json_tokener *tok;
        json_object *o;

        if (q->body_too_big)
                return api_error(q, 413, "the body is larger than %u bytes", API_MAX_BODY), -EINVAL;
        if (!ct || (strcmp(ct, "application/json") != 0 && !startswith(ct, "application/json;")))
                return api_error(q, 415, "the body must be Content-Type: application/json"), -EINVAL;
        tok = json_tokener_new_ex(32);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, q->body ? q->body : "", (int)q->body_len);
        if (o && json_tokener_get_parse_end(tok) != q->body_len) {
                json_object_put(o);
                o = NULL;
        }
        json_tokener_free(tok);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return api_error(q, 400, "the body is not one well-formed JSON object"), -EINVAL;
        }
        json_object_object_foreach(o, key, val) {
                if (!field_allowed(allowed, key, val)) {
                        api_error(q, 400, "unknown or mistyped field '%.64s'", key);
                        json_object_put(o);
                        return -EINVAL;
                }
        }
        *ret = o;
        return 0;
}

static bool is_write(const struct api_req *q) {
        return strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0;
}

static int auth_bearer(struct api_req *q, const char *token) {
        int r = mp_auth_token_check(mp_registry_store(q->srv->reg), token, time(NULL), &q->user);

        if (r == -EKEYEXPIRED)
                return api_error(q, 401, "the API token has expired"), -EACCES;
        if (r == -ENOENT || r == -EBADMSG)
                return api_error(q, 401, "unknown API token"), -EACCES;
        return r < 0 ? api_store_error(q, "token", r), r : 0;
}

static int auth_cookie(struct api_req *q, const char *cookie) {
        const char *user, *csrf, *got;

        if (mp_auth_session(q->con->auth, cookie, time(NULL), &user, &csrf) < 0)
                return api_error(q, 401, "the session is unknown or has expired; log in again"), -EACCES;
        if (is_write(q)) {
                got = MHD_lookup_connection_value(q->mc, MHD_HEADER_KIND, "X-CSRF-Token");
                if (!mp_auth_csrf_ok(csrf, got))
                        return api_error(q, 403, "missing or wrong X-CSRF-Token for this session"), -EACCES;
        }
        q->via_session = true;
        q->user = strdup(user);
        return q->user ? 0 : -ENOMEM;
}

int api_authenticate(struct api_req *q) {
        const char *authz = MHD_lookup_connection_value(q->mc, MHD_HEADER_KIND, "Authorization");
        const char *cookie = MHD_lookup_connection_value(q->mc, MHD_COOKIE_KIND, API_COOKIE);
        int r;

        if (authz && startswith(authz, "Bearer "))
                r = auth_bearer(q, authz + 7);
        else if (authz)
                return api_error(q, 401, "only 'Authorization: Bearer <token>' is accepted"), -EACCES;
        else if (cookie)
                r = auth_cookie(q, cookie);
        else
                return api_error(q, 401, "log in first (POST /api/v1/login) or send a bearer token"),
                       -EACCES;
        if (r < 0)
                return r;
        r = mp_principal_load(mp_registry_store(q->srv->reg), q->user, &q->who);
        if (r == -ENOENT)
                return api_error(q, 401, "the account '%s' no longer exists", q->user), -EACCES;
        if (r < 0)
                return api_store_error(q, "account", r), r;
        return 0;
}

int api_audit(struct api_req *q, const char *action, const char *target, const char *outcome,
              const char *detail) {
        struct mp_audit_entry e = {
                .actor = q->user ? q->user : "-",
                .address = q->address,
                .action = action,
                .target = target,
                .outcome = outcome,
                .detail = detail,
                .now = time(NULL),
        };
        int r = mp_audit_append(mp_registry_store(q->srv->reg), &e, NULL);

        if (r < 0)
                log_error_errno(r, "console: failed to write the audit record of %s by %s: %m", action,
                                e.actor);
        return r;
}

int api_deny(struct api_req *q, const char *action, const char *target, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        (void)api_audit(q, action, target, "denied", msg);
        return api_error(q, 403, "%s", msg);
}

static void peer_address(struct MHD_Connection *mc, char *buf, size_t size) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;

        snprintf(buf, size, "?");
        if (sa && sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)size);
        else if (sa && sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)size);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct mp_console *con = cls;
        struct api_req *q = *con_cls;

        (void)version;
        if (!q) {
                q = calloc(1, sizeof(*q));
                if (!q)
                        return MHD_NO;
                q->con = con;
                q->srv = con->srv;
                q->mc = mc;
                peer_address(mc, q->address, sizeof(q->address));
                *con_cls = q;
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                if (q->body_len + *upload_data_size > API_MAX_BODY) {
                        q->body_too_big = true; /* read and drop the rest, answer 413 */
                } else {
                        char *b = realloc(q->body, q->body_len + *upload_data_size + 1);
                        if (!b)
                                return MHD_NO;
                        memcpy(b + q->body_len, upload_data, *upload_data_size);
                        q->body = b;
                        q->body_len += *upload_data_size;
                        b[q->body_len] = 0;
                }
                *upload_data_size = 0;
                return MHD_YES;
        }
        q->method = method;
        q->url = url;
        if (startswith(url, "/api/"))
                (void)api_dispatch(q);
        else
                (void)api_static(q);
        if (!q->queued)
                (void)api_error(q, 500, "internal error");
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        struct api_req *q = *con_cls;

        (void)cls;
        (void)mc;
        (void)toe;
        if (!q)
                return;
        free(q->body);
        free(q->user);
        mp_principal_free(q->who);
        free(q);
        *con_cls = NULL;
}

/* fmt is libmicrohttpd's own format string (clang's -Wformat-nonliteral). */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
        char msg[512];

        (void)cls;
        vsnprintf(msg, sizeof(msg), fmt, ap);
        log_debug("console: libmicrohttpd: %s", msg);
}

int mp_console_new(struct mp_server *srv, const char *spec, const char *cert_pem, const char *key_pem,
                   const char *webroot, struct mp_console **ret) {
        struct mp_console *con = calloc(1, sizeof(*con));
        const union MHD_DaemonInfo *info;
        int r;

        if (!con)
                return -ENOMEM;
        con->srv = srv;
        con->fd = -1;
        if (webroot && !(con->webroot = strdup(webroot))) {
                r = -ENOMEM;
                goto fail;
        }
        r = mp_auth_new(&con->auth);
        if (r < 0)
                goto fail;
        r = mp_listen_tcp(spec, &con->fd, &con->port);
        if (r < 0) {
                log_error_errno(r, "Failed to listen for the console on %s: %m", spec);
                goto fail;
        }
        con->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_USE_TLS | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
                on_request, con, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET,
                con->fd, MHD_OPTION_HTTPS_MEM_CERT, cert_pem, MHD_OPTION_HTTPS_MEM_KEY, key_pem,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, con, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)64,
                MHD_OPTION_END);
        if (!con->mhd) {
                r = log_error_errno(-EIO, "Failed to start the console's HTTPS server on %s (TLS key?)",
                                    spec);
                goto fail;
        }
        con->fd = -1; /* MHD_stop_daemon closes it */
        info = MHD_get_daemon_info(con->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info) {
                r = -EIO;
                goto fail;
        }
        r = sd_event_add_io(srv->event, &con->io, info->epoll_fd, EPOLLIN, on_io, con);
        if (r >= 0)
                r = sd_event_add_time_relative(srv->event, &con->timer, CLOCK_MONOTONIC, 0, 1000, on_timer,
                                               con);
        if (r < 0)
                goto fail;
        r = console_events_init(con);
        if (r < 0)
                goto fail;
        rearm(con);
        *ret = con;
        return 0;
fail:
        mp_console_free(con);
        return r;
}

struct mp_console *mp_console_free(struct mp_console *con) {
        if (!con)
                return NULL;
        console_events_stop(con);
        if (con->mhd)
                MHD_stop_daemon(con->mhd); /* frees the event streams through their callbacks */
        con->mhd = NULL;
        console_events_done(con);
        sd_event_source_disable_unref(con->io);
        sd_event_source_disable_unref(con->timer);
        if (con->mhd)
                MHD_stop_daemon(con->mhd);
        if (con->fd >= 0)
                close(con->fd);
        mp_auth_free(con->auth);
        free(con->webroot);
        free(con);
        return NULL;
}

uint16_t mp_console_port(const struct mp_console *con) {
        return con->port;
}
