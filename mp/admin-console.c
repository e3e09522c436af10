/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The console's part of the admin socket (root's, or the admin group's):
 *
 *   POST /v1/users         {"name", "role", "collection"?, "password"?}
 *                          creates a console account; without a password
 *                          one is generated and answered once
 *   GET  /v1/audit/verify  walks the audit chain: intact, or the first
 *                          record that breaks it
 *   GET  /v1/audit         every record, oldest first (the export)
 *
 * Both are audited with the actor "admin-socket".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mp/audit.h"
#include "mp/auth.h"
#include "mp/mp.h"
#include "mp/rbac.h"

static int reply(struct mp_conn *c, unsigned status, json_object *o) {
        _cleanup_(mp_buf_unrefp) struct mp_buf *b = NULL;
        size_t len = 0;
        const char *text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

        if (!text || !(b = mp_buf_new(text, len)))
                return -ENOMEM;
        return mp_http_respond(c, status, "application/json", NULL, b);
}

static int reply_error(struct mp_conn *c, unsigned status, const char *msg) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "error", json_object_new_string(msg));
        return reply(c, status, o);
}

static const char *field(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static int user_add(struct mp_conn *c, const uint8_t *body, size_t len) {
        struct mp_store *st = mp_registry_store(c->srv->reg);
        _cleanup_(json_object_putp) json_object *req = NULL, *o = NULL;
        _cleanup_(freep) char *generated = NULL;
        const char *name, *role, *coll, *password;
        struct mp_audit_entry e = {.actor = "admin-socket", .action = "user.add", .now = time(NULL)};
        char msg[256];
        int r;

        struct json_tokener *tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        /* the body is not NUL-terminated: parse it with its length */
        req = json_tokener_parse_ex(tok, len ? (const char *)body : "", (int)len);
        json_tokener_free(tok);
        if (!req || !json_object_is_type(req, json_type_object))
                return reply_error(c, 400, "the body must be a JSON object");
        name = field(req, "name");
        role = field(req, "role");
        coll = field(req, "collection") ? field(req, "collection") : MP_ALL_DEVICES;
        password = field(req, "password");
        if (!name || !role)
                return reply_error(c, 400, "give \"name\" and \"role\"");
        if (password && strlen(password) < 12)
                return reply_error(c, 400, "a password needs at least 12 characters");
        r = mp_auth_user_add(st, name, role, coll, password, e.now, &generated);
        if (r == -EEXIST)
                snprintf(msg, sizeof(msg), "the user '%s' exists already", name);
        else if (r == -EINVAL)
                snprintf(msg, sizeof(msg), "bad user name '%.64s': 1-64 of A-Z a-z 0-9 . _ -", name);
        else if (r == -ENOENT)
                snprintf(msg, sizeof(msg), "no role '%.64s' or no collection '%.64s'", role, coll);
        else if (r < 0)
                snprintf(msg, sizeof(msg), "cannot store the user: %s", strerror(-r));
        if (r < 0)
                return reply_error(c, r == -EEXIST ? 409 : r == -EINVAL || r == -ENOENT ? 400 : 500, msg);
        snprintf(msg, sizeof(msg), "role %s on %s", role, coll);
        e.target = name;
        e.outcome = "ok";
        e.detail = msg;
        r = mp_audit_append(st, &e, NULL);
        if (r < 0)
                return reply_error(c, 500, "cannot write the audit record");
        log_info("Console user '%s' added with %s", name, msg);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "role", json_object_new_string(role));
        json_object_object_add(o, "collection", json_object_new_string(coll));
        if (generated)
                json_object_object_add(o, "password", json_object_new_string(generated));
        return reply(c, 201, o);
}

static int audit_verify(struct mp_conn *c) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_(freep) char *reason = NULL;
        int64_t bad = 0;
        size_t n = 0;
        int r;

        if (!o)
                return -ENOMEM;
        r = mp_audit_verify(mp_registry_store(c->srv->reg), &n, &bad, &reason);
        if (r < 0 && r != -EBADMSG)
                return reply_error(c, 500, "cannot read the audit log");
        json_object_object_add(o, "intact", json_object_new_boolean(r == 0));
        if (r == 0)
                json_object_object_add(o, "records", json_object_new_int64((int64_t)n));
        else {
                json_object_object_add(o, "broken_at", json_object_new_int64(bad));
                json_object_object_add(o, "reason", json_object_new_string(reason));
        }
        return reply(c, 200, o);
}

static int audit_export(struct mp_conn *c) {
        struct mp_store *st = mp_registry_store(c->srv->reg);
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(),
                                                *arr = json_object_new_array();
        struct mp_audit_rec *recs = NULL;
        size_t n = 0;

        if (!o || !arr)
                return -ENOMEM;
        if (st->ops->audit_list(st, 0, 0, &recs, &n) < 0)
                return reply_error(c, 500, "cannot read the audit log");
        for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, mp_audit_rec_json(&recs[i]));
        mp_audit_recs_free(recs, n);
        json_object_object_add(o, "records", TAKE_PTR(arr));
        return reply(c, 200, o);
}

int mp_admin_console_request(struct mp_conn *c, int method, const char *path, const uint8_t *body,
                             size_t len) {
        if (strcmp(path, "/v1/users") == 0 && method == HTTP_POST)
                return user_add(c, body, len);
        if (strcmp(path, "/v1/audit/verify") == 0 && method == HTTP_GET)
                return audit_verify(c);
        if (strcmp(path, "/v1/audit") == 0 && method == HTTP_GET)
                return audit_export(c);
        return -ENOENT;
}
