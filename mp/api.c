/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The REST API's routes (docs/openapi.yaml) and its account endpoints:
 * login, logout, me, tokens, the audit log, roles and collections. Device
 * endpoints are in mp/api-devices.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/api.h"
#include "mp/audit.h"
#include "mp/mp.h"

#define STORE(q) mp_registry_store((q)->srv->reg)

static int api_login(struct api_req *q) {
        static const char *const allowed[] = {"users", "passwords", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *o = NULL;
        char session[MP_AUTH_SECRET_LEN], csrf[MP_AUTH_SECRET_LEN], cookie[160], retry[16];
        json_object *u, *p;
        unsigned wait = 0;
        int r;

        if (api_body(q, &body, allowed) < 0)
                return 0;
        if (!json_object_object_get_ex(body, "user", &u) || !json_object_object_get_ex(body, "password", &p))
                return api_error(q, 400, "give \"user\" and \"password\"");
        q->user = strdup(json_object_get_string(u));
        if (!q->user)
                return -ENOMEM;
        if (!mp_auth_name_valid(q->user)) {
                free(q->user);
                q->user = NULL; /* not an account name: not worth a record under it */
                return api_error(q, 401, "wrong user name or password");
        }
        r = mp_auth_login(api_auth(q), STORE(q), q->user, json_object_get_string(p), q->address, time(NULL),
                          session, csrf, &wait);
        if (r == -EBUSY) {
                snprintf(retry, sizeof(retry), "%u", wait);
                (void)api_audit(q, "login", q->user, "denied", "too many failed logins: locked out");
                o = json_object_new_object();
                json_object_object_add(o, "error",
                                       json_object_new_string("too many failed logins for this "
                                                              "account or address; try again later"));
                return api_json(q, 429, o, "Retry-After", retry);
        }
        if (r == -EACCES) {
                (void)api_audit(q, "login", q->user, "failed", "wrong user name or password");
                return api_error(q, 401, "wrong user name or password");
        }
        if (r < 0)
                return api_store_error(q, "login", r);
        (void)api_audit(q, "login", q->user, "ok", NULL);
        snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; Secure; HttpOnly; SameSite=Strict", API_COOKIE,
                 session);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "user", json_object_new_string(q->user));
        json_object_object_add(o, "csrf_token", json_object_new_string(csrf));
        return api_json(q, 200, o, "Set-Cookie", cookie);
}

static int api_logout(struct api_req *q) {
        const char *cookie = MHD_lookup_connection_value(q->mc, MHD_COOKIE_KIND, API_COOKIE);
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        if (cookie)
                (void)mp_auth_logout(api_auth(q), cookie);
        (void)api_audit(q, "logout", q->user, "ok", NULL);
        json_object_object_add(o, "logged_out", json_object_new_boolean(true));
        return api_json(q, 200, o, "Set-Cookie",
                        API_COOKIE "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
}

/* The caller; with a session, its CSRF token too (a page reloaded reads it
 * here: SameSite=Strict and no CORS keep other origins from reading it). */
static int api_me(struct api_req *q) {
        _cleanup_(json_object_putp) json_object *o = mp_principal_json(q->who);
        const char *cookie = MHD_lookup_connection_value(q->mc, MHD_COOKIE_KIND, API_COOKIE);
        const char *user, *csrf;

        if (!o)
                return -ENOMEM;
        if (q->via_session && cookie && mp_auth_session(api_auth(q), cookie, time(NULL), &user, &csrf) >= 0)
                json_object_object_add(o, "csrf_token", json_object_new_string(csrf));
        return api_json(q, 200, o, NULL, NULL);
}

/* POST /api/v1/tokens {"label": "...", "expires_in": seconds}: a token of
 * the caller's own, shown once. */
static int api_token_new(struct api_req *q) {
        static const char *const allowed[] = {"labels", "expires_ini", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *o = NULL;
        _cleanup_(freep) char *token = NULL;
        char id[MP_AUTH_SECRET_LEN];
        const char *label = NULL;
        int64_t ttl = 30 * 86400;
        json_object *v;
        int r;

        if (api_body(q, &body, allowed) < 0)
                return 0;
        if (json_object_object_get_ex(body, "label", &v))
                label = json_object_get_string(v);
        if (label && strlen(label) > 200)
                return api_error(q, 400, "'label' is longer than 200 characters");
        if (json_object_object_get_ex(body, "expires_in", &v))
                ttl = json_object_get_int64(v);
        if (ttl < 1 || ttl > 366LL * 86400)
                return api_error(q, 400, "'expires_in' must be 1 .. 31622400 seconds");
        r = mp_auth_token_new(STORE(q), q->user, label, ttl, time(NULL), &token, id);
        if (r < 0)
                return api_store_error(q, "token", r);
        (void)api_audit(q, "token.create", id, "ok", label);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "token", json_object_new_string(token));
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "expires", json_object_new_int64(time(NULL) + ttl));
        return api_json(q, 201, o, NULL, NULL);
}

static int parse_page(struct api_req *q, const char *key, uint64_t max, uint64_t def, uint64_t *ret) {
        const char *v = api_query(q, key);

        *ret = def;
        if (v && parse_u64(v, key[0] == 'l' ? 1 : 0, max, ret) < 0)
                return api_error(q, 400, "'%s' must be a number 0 .. %llu", key, (unsigned long long)max),
                       -EINVAL;
        return 0;
}

/* GET /api/v1/audit?after=SEQ&limit=N, or ?format=jsonl: the whole log as
 * JSON lines (the export). */
static int api_audit_list(struct api_req *q) {
        _cleanup_(json_object_putp) json_object *o = NULL, *arr = NULL;
        const char *format = api_query(q, "format");
        struct mp_audit_rec *recs = NULL;
        uint64_t after, limit;
        size_t n = 0;
        int r;

        if (!mp_principal_has(q->who, MP_PERM_AUDIT_READ, NULL))
                return api_deny(q, "audit.read", NULL, "user '%s' has no role granting audit.read", q->user);
        if (format && strcmp(format, "jsonl") != 0)
                return api_error(q, 400, "'format' can only be jsonl");
        if (parse_page(q, "after", INT64_MAX, 0, &after) < 0 ||
            parse_page(q, "limit", API_MAX_PAGE, 100, &limit) < 0)
                return 0;
        r = STORE(q)->ops->audit_list(STORE(q), (int64_t)after, format ? 0 : (unsigned)limit, &recs, &n);
        if (r < 0)
                return api_store_error(q, "audit", r);
        if (format) {
                _cleanup_(freep) char *text = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&text, &len);
                struct MHD_Response *resp;

                for (size_t i = 0; f && i < n; i++) {
                        json_object *line = mp_audit_rec_json(&recs[i]);
                        fprintf(f, "%s\n", json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN));
                        json_object_put(line);
                }
                mp_audit_recs_free(recs, n);
                if (!f || fclose(f) != 0)
                        return -ENOMEM;
                resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
                if (!resp)
                        return -ENOMEM;
                (void)MHD_add_response_header(resp, "Content-Type", "application/x-ndjson");
                (void)MHD_add_response_header(resp, "Content-Disposition",
                                              "attachment; filename=audit.jsonl");
                (void)MHD_add_response_header(resp, "Content-Security-Policy", "default-src 'none'");
                (void)MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
                r = MHD_queue_response(q->mc, 200, resp) == MHD_YES ? 0 : -EIO;
                MHD_destroy_response(resp);
                q->queued = true;
                return r;
        }
        arr = json_object_new_array();
        for (size_t i = 0; arr && i < n; i++)
                json_object_array_add(arr, mp_audit_rec_json(&recs[i]));
        mp_audit_recs_free(recs, n);
        o = json_object_new_object();
        if (!o || !arr)
                return -ENOMEM;
        json_object_object_add(o, "records", TAKE_PTR(arr));
        return api_json(q, 200, o, NULL, NULL);
}

/* PUT /api/v1/roles/NAME {"permissions": [...]} and
 * PUT /api/v1/collections/NAME {"client_ids": [...]} or {"rule": {...}}. */
static int api_doc_put(struct api_req *q, const char *kind, const char *name) {
        static const char *const role_keys[] = {"permissionsa", NULL};
        static const char *const coll_keys[] = {"client_idsa", "ruleo", NULL};
        bool role = strcmp(kind, "role") == 0;
        _cleanup_(json_object_putp) json_object *body = NULL, *o = NULL;
        char action[32];
        const char *err = NULL;
        int r;

        snprintf(action, sizeof(action), "%s.put", kind);
        if (!mp_principal_has(q->who, MP_PERM_ROLES_MANAGE, NULL))
                return api_deny(q, action, name, "user '%s' has no role granting roles.manage", q->user);
        if (!mp_auth_name_valid(name) && !(strlen(name) <= 64 && strchr(name, ' ') && !strchr(name, '/')))
                return api_error(q, 400, "bad %s name", kind);
        if ((role && mp_role_builtin(name)) || (!role && strcmp(name, MP_ALL_DEVICES) == 0))
                return api_error(q, 409, "'%s' is built in and cannot be changed", name);
        if (api_body(q, &body, role ? role_keys : coll_keys) < 0)
                return 0;
        r = role ? mp_role_validate(body, &err) : mp_collection_validate(body, &err);
        if (r < 0)
                return api_error(q, 400, "%s", err);
        r = STORE(q)->ops->doc_put(STORE(q), kind, name,
                                   json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN), time(NULL));
        if (r < 0)
                return api_store_error(q, kind, r);
        (void)api_audit(q, action, name, "ok", json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, kind, json_object_get(body));
        return api_json(q, 200, o, NULL, NULL);
}

static int api_docs_list(struct api_req *q, const char *kind, const char *key) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(),
                                                *arr = json_object_new_array();
        struct mp_doc_rec *docs = NULL;
        size_t n = 0;
        int r;

        if (!o || !arr)
                return -ENOMEM;
        r = STORE(q)->ops->docs(STORE(q), kind, &docs, &n);
        if (r < 0)
                return api_store_error(q, kind, r);
        for (size_t i = 0; i < n; i++) {
                json_object *row = json_object_new_object();
                json_object_object_add(row, "name", json_object_new_string(docs[i].name));
                json_object_object_add(row, kind, json_tokener_parse(docs[i].body));
                json_object_array_add(arr, row);
        }
        mp_doc_recs_free(docs, n);
        json_object_object_add(o, key, TAKE_PTR(arr));
        return api_json(q, 200, o, NULL, NULL);
}

/* Splits "/api/v1/<coll>/<id>[/<verb>]" after prefix into id and verb. */
static bool split_id(const char *rest, char *id, size_t size, const char **ret_verb) {
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);

        if (n == 0 || n >= size)
                return false;
        memcpy(id, rest, n);
        id[n] = 0;
        *ret_verb = slash ? slash : "";
        return true;
}

static int route_authenticated(struct api_req *q, const char *path) {
        bool get = strcmp(q->method, "GET") == 0, post = strcmp(q->method, "POST") == 0,
             put = strcmp(q->method, "PUT") == 0, del = strcmp(q->method, "DELETE") == 0;
        const char *verb;
        char id[256];

        if (strcmp(path, "logout") == 0 && post)
                return api_logout(q);
        if (strcmp(path, "me") == 0 && get)
                return api_me(q);
        if (strcmp(path, "tokens") == 0 && post)
                return api_token_new(q);
        if (startswith(path, "tokens/") && del && split_id(path + 7, id, sizeof(id), &verb) && !*verb)
                return api_token_delete(q, id);
        if (strcmp(path, "me/password") == 0 && post)
                return api_password_change(q);
        if (startswith(path, "users/") && del && split_id(path + 6, id, sizeof(id), &verb) && !*verb)
                return api_user_delete(q, id);
        if (strcmp(path, "devices") == 0 && get)
                return api_devices_list(q);
        if (strcmp(path, "events") == 0 && get)
                return api_events(q);
        if (startswith(path, "devices/") && split_id(path + 8, id, sizeof(id), &verb)) {
                if (!*verb && get)
                        return api_device_get(q, id);
                if (strcmp(verb, "/actions") == 0 && post)
                        return api_action(q, id);
        }
        if (strcmp(path, "actions") == 0 && post)
                return api_action(q, NULL);
        if (startswith(path, "pushes/") && get && split_id(path + 7, id, sizeof(id), &verb) && !*verb)
                return api_push_get(q, id);
        if (strcmp(path, "approvals") == 0 && get)
                return api_approvals_list(q);
        if (startswith(path, "approvals/") && post && split_id(path + 10, id, sizeof(id), &verb) && !*verb)
                return api_approval_decide(q, id);
        if (strcmp(path, "audit") == 0 && get)
                return api_audit_list(q);
        if (strcmp(path, "users") == 0 && get)
                return api_users(q);
        if (strcmp(path, "users") == 0 && post)
                return api_user_add(q);
        if (startswith(path, "users/") && put && split_id(path + 6, id, sizeof(id), &verb) &&
            strcmp(verb, "/grants") == 0)
                return api_user_grants(q, id);
        if (strcmp(path, "roles") == 0 && get)
                return api_docs_list(q, "role", "roles");
        if (strcmp(path, "collections") == 0 && get)
                return api_docs_list(q, "collection", "collections");
        if (startswith(path, "roles/") && put && split_id(path + 6, id, sizeof(id), &verb) && !*verb)
                return api_doc_put(q, "role", id);
        if (startswith(path, "collections/") && put && split_id(path + 12, id, sizeof(id), &verb) && !*verb)
                return api_doc_put(q, "collection", id);
        return api_error(q, 404, "no such endpoint: %s /api/v1/%.200s", q->method, path);
}

int api_dispatch(struct api_req *q) {
        const char *path;
        int r;

        if (!startswith(q->url, "/api/v1/"))
                return api_error(q, 404, "the API lives under /api/v1/");
        path = q->url + strlen("/api/v1/");
        if (strcmp(path, "login") == 0)
                return strcmp(q->method, "POST") == 0 ? api_login(q) : api_error(q, 405, "POST only");
        r = api_authenticate(q);
        if (r < 0)
                return q->queued ? 0 : r;
        return route_authenticated(q, path);
}

static const char *content_type(const char *path) {
        static const char *const types[][2] = {
                {".html", "text/html; charset=utf-8"},
                {".js", "text/javascript; charset=utf-8"},
                {".css", "text/css; charset=utf-8"},
                {".png", "image/png"},
                {".svg", "image/svg+xml"},
                {".ico", "image/x-icon"},
        };
        const char *dot = strrchr(path, '.');

        for (size_t i = 0; dot && i < ELEMENTSOF(types); i++)
                if (strcmp(dot, types[i][0]) == 0)
                        return types[i][1];
        return NULL;
}

/* The web console's files: GET only, names of [a-z0-9.-] under webroot. */
int api_static(struct api_req *q) {
        const char *name = strcmp(q->url, "/") == 0 ? "index.html" : q->url + 1;
        struct MHD_Response *resp;
        char path[4096];
        struct stat st;
        int fd;

        if (strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0)
                return api_error(q, 405, "GET only");
        if (!*name || name[0] == '.' ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(name) || !content_type(name))
                return api_error(q, 404, "no such page");
        if (!api_webroot(q))
                return api_error(q, 404, "the web console is not installed");
        snprintf(path, sizeof(path), "%s/%s", api_webroot(q), name);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return api_error(q, 404, "no such page");
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return api_error(q, 404, "no such page");
        }
        resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
        if (!resp) {
                close(fd);
                return -ENOMEM;
        }
        (void)MHD_add_response_header(resp, "Content-Type", content_type(name));
        return api_queue(q, 200, resp);
}
