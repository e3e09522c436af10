/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The REST API's accounts (users.manage): list them with their grants,
 * create one (its one-time password is answered once), replace a user's
 * grants. Never a password hash in an answer; every change audited.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp/api.h"
#include "mp/mp.h"

#define STORE(q) mp_registry_store((q)->srv->reg)

/* GET /api/v1/users: accounts and their grants (never a hash). */
int api_users(struct api_req *q) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(),
                                                *arr = json_object_new_array();
        struct mp_doc_rec *docs = NULL;
        size_t n = 0;
        int r;

        if (!o || !arr)
                return -ENOMEM;
        if (!mp_principal_has(q->who, MP_PERM_USERS_MANAGE, NULL))
                return api_deny(q, "users.read", NULL, "user '%s' has no role granting users.manage",
                                q->user);
        r = STORE(q)->ops->docs(STORE(q), "user", &docs, &n);
        if (r < 0)
                return api_store_error(q, "users", r);
        for (size_t i = 0; i < n; i++) {
                json_object *doc = json_tokener_parse(docs[i].body), *row = json_object_new_object(), *v;

                json_object_object_add(row, "name", json_object_new_string(docs[i].name));
                if (doc && json_object_object_get_ex(doc, "grants", &v))
                        json_object_object_add(row, "grants", json_object_get(v));
                if (doc && json_object_object_get_ex(doc, "created", &v))
                        json_object_object_add(row, "created", json_object_get(v));
                json_object_put(doc);
                json_object_array_add(arr, row);
        }
        mp_doc_recs_free(docs, n);
        json_object_object_add(o, "users", TAKE_PTR(arr));
        return api_json(q, 200, o, NULL, NULL);
}

/* POST /api/v1/users {"name", "role", "collection"?}: the password is
 * generated and answered once. */
int api_user_add(struct api_req *q) {
        static const char *const allowed[] = {"names", "roles", "collections", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *o = NULL;
        _cleanup_(freep) char *pw = NULL;
        const char *name, *role, *coll = MP_ALL_DEVICES;
        char detail[200];
        json_object *v;
        int r;

        if (!mp_principal_has(q->who, MP_PERM_USERS_MANAGE, NULL))
                return api_deny(q, "user.add", NULL, "user '%s' has no role granting users.manage", q->user);
        if (api_body(q, &body, allowed) < 0)
                return 0;
        if (!json_object_object_get_ex(body, "name", &v) || !(name = json_object_get_string(v)) ||
            !json_object_object_get_ex(body, "role", &v) || !(role = json_object_get_string(v)))
                return api_error(q, 400, "give \"name\" and \"role\"");
        if (json_object_object_get_ex(body, "collection", &v))
                coll = json_object_get_string(v);
        r = mp_auth_user_add(STORE(q), name, role, coll, NULL, time(NULL), &pw);
        if (r == -EEXIST)
                return api_error(q, 409, "the user '%.64s' exists already", name);
        if (r == -EINVAL)
                return api_error(q, 400, "bad user name: 1-64 of A-Z a-z 0-9 . _ -");
        if (r == -ENOENT)
                return api_error(q, 400, "no role '%.64s' or no collection '%.64s'", role, coll);
        if (r < 0)
                return api_store_error(q, "user", r);
        snprintf(detail, sizeof(detail), "role %.64s on %.64s", role, coll);
        (void)api_audit(q, "user.add", name, "ok", detail);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "password", json_object_new_string(pw));
        return api_json(q, 201, o, NULL, NULL);
}

/* Checks [{"role", "collection"}, ...]: known roles and collections. */
static int check_grants(struct api_req *q, json_object *grants) {
        size_t n = json_object_array_length(grants);

        if (n > 100)
                return api_error(q, 400, "at most 100 grants"), -EINVAL;
        for (size_t i = 0; i < n; i++) {
                json_object *g = json_object_array_get_idx(grants, i), *role, *coll;
                _cleanup_(freep) char *body = NULL;
                unsigned perms;

                if (!json_object_is_type(g, json_type_object) || json_object_object_length(g) != 2 ||
                    !json_object_object_get_ex(g, "role", &role) ||
                    !json_object_is_type(role, json_type_string) ||
                    !json_object_object_get_ex(g, "collection", &coll) ||
                    !json_object_is_type(coll, json_type_string))
                        return api_error(q, 400, "a grant is {\"role\": NAME, \"collection\": NAME}"),
                               -EINVAL;
                if (mp_role_perms(STORE(q), json_object_get_string(role), &perms) < 0)
                        return api_error(q, 400, "no role '%.64s'", json_object_get_string(role)), -EINVAL;
                if (strcmp(json_object_get_string(coll), MP_ALL_DEVICES) != 0 &&
                    STORE(q)->ops->doc_get(STORE(q), "collection", json_object_get_string(coll), &body) < 0)
                        return api_error(q, 400, "no collection '%.64s'", json_object_get_string(coll)),
                               -EINVAL;
        }
        return 0;
}

/* PUT /api/v1/users/NAME/grants {"grants": [...]}: replaces them. */
int api_user_grants(struct api_req *q, const char *name) {
        static const char *const allowed[] = {"grantsa", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *doc = NULL, *o = NULL;
        _cleanup_(freep) char *text = NULL;
        json_object *grants;
        int r;

        if (!mp_principal_has(q->who, MP_PERM_USERS_MANAGE, NULL))
                return api_deny(q, "user.grants", name, "user '%s' has no role granting users.manage",
                                q->user);
        if (api_body(q, &body, allowed) < 0)
                return 0;
        if (!json_object_object_get_ex(body, "grants", &grants))
                return api_error(q, 400, "give \"grants\"");
        if (check_grants(q, grants) < 0)
                return 0;
        r = STORE(q)->ops->doc_get(STORE(q), "user", name, &text);
        if (r == -ENOENT)
                return api_error(q, 404, "no user '%.64s'", name);
        if (r < 0)
                return api_store_error(q, "user", r);
        doc = json_tokener_parse(text);
        if (!doc)
                return api_error(q, 500, "the stored user '%.64s' is not JSON", name);
        json_object_object_add(doc, "grants", json_object_get(grants));
        r = STORE(q)->ops->doc_put(STORE(q), "user", name,
                                   json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN), time(NULL));
        if (r < 0)
                return api_store_error(q, "user", r);
        (void)api_audit(q, "user.grants", name, "ok",
                        json_object_to_json_string_ext(grants, JSON_C_TO_STRING_PLAIN));
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "grants", json_object_get(grants));
        return api_json(q, 200, o, NULL, NULL);
}

/* DELETE /api/v1/users/NAME: the account, its sessions and its tokens. */
int api_user_delete(struct api_req *q, const char *name) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        struct mp_doc_rec *tokens = NULL;
        size_t n = 0;
        int r;

        if (!mp_principal_has(q->who, MP_PERM_USERS_MANAGE, NULL))
                return api_deny(q, "user.delete", name, "user '%s' has no role granting users.manage",
                                q->user);
        if (strcmp(name, q->user) == 0)
                return api_error(q, 409, "you cannot remove your own account");
        r = STORE(q)->ops->doc_delete(STORE(q), "user", name);
        if (r == -ENOENT)
                return api_error(q, 404, "no user '%.64s'", name);
        if (r < 0)
                return api_store_error(q, "user", r);
        mp_auth_logout_user(api_auth(q), name);
        r = STORE(q)->ops->docs(STORE(q), "token", &tokens, &n);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                _cleanup_(json_object_putp) json_object *t = json_tokener_parse(tokens[i].body);
                json_object *u;

                if (t && json_object_object_get_ex(t, "user", &u) &&
                    strcmp(json_object_get_string(u), name) == 0)
                        r = STORE(q)->ops->doc_delete(STORE(q), "token", tokens[i].name);
        }
        mp_doc_recs_free(tokens, n);
        if (r < 0)
                return api_store_error(q, "tokens", r);
        (void)api_audit(q, "user.delete", name, "ok", NULL);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "deleted", json_object_new_string(name));
        return api_json(q, 200, o, NULL, NULL);
}

/* POST /api/v1/me/password {"old", "new"}: the caller's own password; every
 * other session of the caller ends. */
int api_password_change(struct api_req *q) {
        static const char *const allowed[] = {"olds", "news", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *doc = NULL, *o = NULL;
        _cleanup_(freep) char *text = NULL, *hash = NULL;
        const char *old = NULL, *new = NULL;
        json_object *v, *h;
        int r;

        if (api_body(q, &body, allowed) < 0)
                return 0;
        if (json_object_object_get_ex(body, "old", &v))
                old = json_object_get_string(v);
        if (json_object_object_get_ex(body, "new", &v))
                new = json_object_get_string(v);
        if (!old || !new || strlen(new) < 12 || strlen(new) > 1024)
                return api_error(q, 400, "give \"old\" and \"new\" (12 to 1024 characters)");
        r = STORE(q)->ops->doc_get(STORE(q), "user", q->user, &text);
        if (r < 0)
                return api_store_error(q, "user", r);
        doc = json_tokener_parse(text);
        if (!doc || !json_object_object_get_ex(doc, "password_hash", &h) ||
            mp_auth_password_verify(json_object_get_string(h), old) < 0) {
                (void)api_audit(q, "user.password", q->user, "denied", "wrong old password");
                return api_error(q, 403, "the old password is wrong");
        }
        r = mp_auth_password_hash(new, &hash);
        if (r < 0)
                return api_store_error(q, "password", r);
        json_object_object_add(doc, "password_hash", json_object_new_string(hash));
        r = STORE(q)->ops->doc_put(STORE(q), "user", q->user,
                                   json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN), time(NULL));
        if (r < 0)
                return api_store_error(q, "user", r);
        mp_auth_logout_user(api_auth(q), q->user); /* this session too: log in again */
        (void)api_audit(q, "user.password", q->user, "ok", NULL);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "changed", json_object_new_boolean(true));
        return api_json(q, 200, o, NULL, NULL);
}

/* DELETE /api/v1/tokens/ID: one of the caller's tokens (or anyone's with
 * users.manage). */
int api_token_delete(struct api_req *q, const char *id) {
        _cleanup_(json_object_putp) json_object *t = NULL, *o = NULL;
        _cleanup_(freep) char *text = NULL;
        json_object *u;
        int r;

        r = STORE(q)->ops->doc_get(STORE(q), "token", id, &text);
        if (r == -ENOENT)
                return api_error(q, 404, "no token '%.64s'", id);
        if (r < 0)
                return api_store_error(q, "token", r);
        t = json_tokener_parse(text);
        if (!t || !json_object_object_get_ex(t, "user", &u))
                return api_error(q, 500, "the stored token is not JSON");
        if (strcmp(json_object_get_string(u), q->user) != 0 &&
            !mp_principal_has(q->who, MP_PERM_USERS_MANAGE, NULL))
                return api_deny(q, "token.delete", id,
                                "the token is not yours and user '%s' has no users.manage", q->user);
        r = STORE(q)->ops->doc_delete(STORE(q), "token", id);
        if (r < 0)
                return api_store_error(q, "token", r);
        (void)api_audit(q, "token.delete", id, "ok", NULL);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "deleted", json_object_new_string(id));
        return api_json(q, 200, o, NULL, NULL);
}
