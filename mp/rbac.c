/* SPDX-License-Identifier: Apache-2.0 */
/* Roles, collections and grants (mp/rbac.h). */
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "mp/rbac.h"
#include "mp/util.h"

static const char *const perm_names[] = {
        "devices.read", "actions.run", "devices.approve", "audit.read", "users.manage", "roles.manage",
};

static const struct {
        const char *name;
        unsigned perms;
} builtin_roles[] = {
        {"full-administrator", MP_PERM_ALL},
        {"operator", MP_PERM_DEVICES_READ | MP_PERM_ACTIONS_RUN},
        {"approver", MP_PERM_DEVICES_READ | MP_PERM_DEVICES_APPROVE},
        {"read-only-analyst", MP_PERM_DEVICES_READ | MP_PERM_AUDIT_READ},
};

enum coll_kind { COLL_ALL, COLL_LIST, COLL_RULE };

struct grant {
        char *role;
        unsigned perms;
        char *collection;
        enum coll_kind kind;
        json_object *doc; /* the collection's document (list or rule) */
};

struct mp_principal {
        char *name;
        struct grant *grants;
        size_t n_grants;
};

const char *mp_perm_name(enum mp_perm p) {
        for (size_t i = 0; i < ELEMENTSOF(perm_names); i++)
                if (p == (1u << i))
                        return perm_names[i];
        return "?";
}

int mp_perm_from_name(const char *name, enum mp_perm *ret) {
        for (size_t i = 0; i < ELEMENTSOF(perm_names); i++)
                if (strcmp(name, perm_names[i]) == 0) {
                        *ret = (enum mp_perm)(1u << i);
                        return 0;
                }
        return -EINVAL;
}

bool mp_role_builtin(const char *role) {
        for (size_t i = 0; i < ELEMENTSOF(builtin_roles); i++)
                if (strcmp(role, builtin_roles[i].name) == 0)
                        return true;
        return false;
}

int mp_role_validate(json_object *doc, const char **ret_error) {
        json_object *perms;

        if (!json_object_is_type(doc, json_type_object) || json_object_object_length(doc) != 1 ||
            !json_object_object_get_ex(doc, "permissions", &perms) ||
            !json_object_is_type(perms, json_type_array) || json_object_array_length(perms) == 0) {
                *ret_error = "a role is {\"permissions\": [names]} with at least one permission";
                return -EINVAL;
        }
        for (size_t i = 0; i < json_object_array_length(perms); i++) {
                json_object *v = json_object_array_get_idx(perms, i);
                enum mp_perm p;

                if (!json_object_is_type(v, json_type_string) ||
                    mp_perm_from_name(json_object_get_string(v), &p) < 0) {
                        *ret_error = "unknown permission (devices.read, actions.run, devices.approve, "
                                     "audit.read, users.manage, roles.manage)";
                        return -EINVAL;
                }
        }
        return 0;
}

int mp_role_perms(struct mp_store *st, const char *role, unsigned *ret) {
        _cleanup_(json_object_putp) json_object *doc = NULL;
        _cleanup_(freep) char *body = NULL;
        json_object *perms;
        unsigned mask = 0;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(builtin_roles); i++)
                if (strcmp(role, builtin_roles[i].name) == 0) {
                        *ret = builtin_roles[i].perms;
                        return 0;
                }
        r = st->ops->doc_get(st, "role", role, &body);
        if (r < 0)
                return r;
        doc = json_tokener_parse(body);
        if (!doc || !json_object_object_get_ex(doc, "permissions", &perms))
                return -EBADMSG;
        for (size_t i = 0; i < json_object_array_length(perms); i++) {
                enum mp_perm p;

                if (mp_perm_from_name(json_object_get_string(json_object_array_get_idx(perms, i)), &p) >= 0)
                        mask |= p;
        }
        *ret = mask;
        return 0;
}

static bool string_array(json_object *v) {
        if (!json_object_is_type(v, json_type_array))
                return false;
        for (size_t i = 0; i < json_object_array_length(v); i++)
                if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string))
                        return false;
        return true;
}

int mp_collection_validate(json_object *doc, const char **ret_error) {
        json_object *v;

        *ret_error = "a collection is {\"client_ids\": [ClientIDs]} or {\"rule\": {\"hostname\": GLOB, "
                     "\"status\": \"approved|pending|rejected\", \"version\": GLOB}}";
        if (!json_object_is_type(doc, json_type_object) || json_object_object_length(doc) != 1)
                return -EINVAL;
        if (json_object_object_get_ex(doc, "client_ids", &v))
                return string_array(v) ? 0 : -EINVAL;
        if (!json_object_object_get_ex(doc, "rule", &v) || !json_object_is_type(v, json_type_object) ||
            json_object_object_length(v) == 0)
                return -EINVAL;
        json_object_object_foreach(v, key, val) {
                if ((strcmp(key, "hostname") != 0 && strcmp(key, "status") != 0 &&
                     strcmp(key, "version") != 0) ||
                    !json_object_is_type(val, json_type_string))
                        return -EINVAL;
        }
        return 0;
}

static bool rule_part(json_object *rule, const char *key, const char *value, bool glob) {
        json_object *v;

        if (!json_object_object_get_ex(rule, key, &v))
                return true;
        if (!value)
                return false;
        return glob ? fnmatch(json_object_get_string(v), value, 0) == 0
                    : strcmp(json_object_get_string(v), value) == 0;
}

static bool collection_holds(const struct grant *g, const struct mp_rbac_device *dev) {
        json_object *v;

        switch (g->kind) {
        case COLL_ALL:
                return true;
        case COLL_LIST:
                if (!json_object_object_get_ex(g->doc, "client_ids", &v))
                        return false;
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        if (strcasecmp(json_object_get_string(json_object_array_get_idx(v, i)),
                                       dev->client_id) == 0)
                                return true;
                return false;
        case COLL_RULE:
                if (!json_object_object_get_ex(g->doc, "rule", &v))
                        return false;
                return rule_part(v, "hostname", dev->hostname, true) &&
                       rule_part(v, "status", dev->status, false) &&
                       rule_part(v, "version", dev->version, true);
        }
        return false;
}

struct mp_principal *mp_principal_free(struct mp_principal *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_grants; i++) {
                free(p->grants[i].role);
                free(p->grants[i].collection);
                json_object_put(p->grants[i].doc);
        }
        free(p->grants);
        free(p->name);
        free(p);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mp_principal *, mp_principal_free)

/* Resolves one grant; a role or collection gone grants nothing (perms 0). */
static int grant_load(struct mp_store *st, json_object *gj, struct grant *g) {
        json_object *role, *coll;
        _cleanup_(freep) char *body = NULL;
        int r;

        if (!json_object_object_get_ex(gj, "role", &role) ||
            !json_object_object_get_ex(gj, "collection", &coll))
                return -EBADMSG;
        g->role = strdup(json_object_get_string(role));
        g->collection = strdup(json_object_get_string(coll));
        if (!g->role || !g->collection)
                return -ENOMEM;
        r = mp_role_perms(st, g->role, &g->perms);
        if (r == -ENOENT || r == -EBADMSG)
                g->perms = 0;
        else if (r < 0)
                return r;
        if (strcmp(g->collection, MP_ALL_DEVICES) == 0) {
                g->kind = COLL_ALL;
                return 0;
        }
        r = st->ops->doc_get(st, "collection", g->collection, &body);
        if (r == -ENOENT) {
                g->perms = 0;
                return 0;
        }
        if (r < 0)
                return r;
        g->doc = json_tokener_parse(body);
        if (!g->doc) {
                g->perms = 0;
                return 0;
        }
        g->kind = json_object_object_get_ex(g->doc, "rule", NULL) ? COLL_RULE : COLL_LIST;
        return 0;
}

int mp_principal_load(struct mp_store *st, const char *user, struct mp_principal **ret) {
        _cleanup_(mp_principal_freep) struct mp_principal *p = NULL;
        _cleanup_(json_object_putp) json_object *doc = NULL;
        _cleanup_(freep) char *body = NULL;
        json_object *grants;
        size_t n;
        int r;

        r = st->ops->doc_get(st, "user", user, &body);
        if (r < 0)
                return r;
        doc = json_tokener_parse(body);
        if (!doc)
                return -EBADMSG;
        p = calloc(1, sizeof(*p));
        if (!p || !(p->name = strdup(user)))
                return -ENOMEM;
        if (!json_object_object_get_ex(doc, "grants", &grants) ||
            !json_object_is_type(grants, json_type_array))
                n = 0;
        else
                n = json_object_array_length(grants);
        p->grants = calloc(n ? n : 1, sizeof(*p->grants));
        if (!p->grants)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = grant_load(st, json_object_array_get_idx(grants, i), &p->grants[p->n_grants++]);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

const char *mp_principal_name(const struct mp_principal *p) {
        return p->name;
}

bool mp_principal_can(const struct mp_principal *p, enum mp_perm perm, const struct mp_rbac_device *dev,
                      const char **ret_role) {
        for (size_t i = 0; i < p->n_grants; i++)
                if ((p->grants[i].perms & perm) && collection_holds(&p->grants[i], dev)) {
                        if (ret_role)
                                *ret_role = p->grants[i].role;
                        return true;
                }
        return false;
}

bool mp_principal_has(const struct mp_principal *p, enum mp_perm perm, const char **ret_role) {
        for (size_t i = 0; i < p->n_grants; i++)
                if (p->grants[i].perms & perm) {
                        if (ret_role)
                                *ret_role = p->grants[i].role;
                        return true;
                }
        return false;
}

json_object *mp_principal_json(const struct mp_principal *p) {
        json_object *o = json_object_new_object(), *grants = json_object_new_array(),
                    *perms = json_object_new_array();
        unsigned all = 0;

        if (!o || !grants || !perms) {
                json_object_put(o);
                json_object_put(grants);
                json_object_put(perms);
                return NULL;
        }
        for (size_t i = 0; i < p->n_grants; i++) {
                json_object *g = json_object_new_object();

                json_object_object_add(g, "role", json_object_new_string(p->grants[i].role));
                json_object_object_add(g, "collection", json_object_new_string(p->grants[i].collection));
                json_object_array_add(grants, g);
                all |= p->grants[i].perms;
        }
        for (size_t i = 0; i < ELEMENTSOF(perm_names); i++)
                if (all & (1u << i))
                        json_object_array_add(perms, json_object_new_string(perm_names[i]));
        json_object_object_add(o, "name", json_object_new_string(p->name));
        json_object_object_add(o, "grants", grants);
        json_object_object_add(o, "permissions", perms);
        return o;
}

int mp_collection_holds(struct mp_store *st, const char *name, const struct mp_rbac_device *dev, bool *ret) {
        _cleanup_(json_object_putp) json_object *gj = json_object_new_object();
        struct grant g = {};
        int r;

        if (!gj)
                return -ENOMEM;
        json_object_object_add(gj, "role", json_object_new_string("full-administrator"));
        json_object_object_add(gj, "collection", json_object_new_string(name));
        r = grant_load(st, gj, &g);
        /* grant_load leaves perms 0 when the collection is gone */
        if (r >= 0 && g.perms == 0)
                r = -ENOENT;
        if (r >= 0)
                *ret = collection_holds(&g, dev);
        free(g.role);
        free(g.collection);
        json_object_put(g.doc);
        return r;
}
