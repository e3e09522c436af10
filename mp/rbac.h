/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Who may do what on which devices (the console and its REST API).
 *
 *  - A permission is a named right ("devices.read", "actions.run", ...).
 *  - A role is a set of permissions: four are built in (full-administrator,
 *    operator, approver, read-only-analyst); custom roles are stored
 *    documents {"permissions": [...]} of kind "role".
 *  - A collection is a scope: a static list {"client_ids": [...]} or a rule
 *    {"rule": {"hostname": GLOB, "status": S, "version": GLOB}} (every
 *    given part must match), stored as kind "collection". "All devices"
 *    always exists and holds every device.
 *  - A user holds grants: a role on a collection. A permission on a device
 *    is held when some grant's role has it and its collection holds the
 *    device; a permission that is not about a device (audit.read,
 *    users.manage) is held when some grant's role has it.
 *
 * Every check is made here, on the server, for every request.
 * Ownership: a principal is the caller's (mp_principal_free).
 */

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "mp/store.h"

enum mp_perm {
        MP_PERM_DEVICES_READ = 1u << 0,    /* see devices, their pushes and responses */
        MP_PERM_ACTIONS_RUN = 1u << 1,     /* the three client actions */
        MP_PERM_DEVICES_APPROVE = 1u << 2, /* approve or reject pending devices */
        MP_PERM_AUDIT_READ = 1u << 3,
        MP_PERM_USERS_MANAGE = 1u << 4, /* users, their grants, others' tokens */
        MP_PERM_ROLES_MANAGE = 1u << 5, /* custom roles and collections */
        MP_PERM_ALL = (1u << 6) - 1,
};

#define MP_ALL_DEVICES "All devices"

/* The fields a collection rule reads. */
struct mp_rbac_device {
        const char *client_id, *hostname, *status, *version;
};

struct mp_principal;

const char *mp_perm_name(enum mp_perm p);
int mp_perm_from_name(const char *name, enum mp_perm *ret); /* -EINVAL */
/* A role's permissions: built-in, or the stored custom role. -ENOENT. */
int mp_role_perms(struct mp_store *st, const char *role, unsigned *ret);
bool mp_role_builtin(const char *role);
/* Validates a custom role or a collection document; *ret_error says why
 * not (a static string). */
int mp_role_validate(json_object *doc, const char **ret_error);
int mp_collection_validate(json_object *doc, const char **ret_error);

/* Loads a user's grants with their roles and collections resolved. A
 * grant naming a role or collection that no longer exists grants nothing.
 * -ENOENT: no such user. */
int mp_principal_load(struct mp_store *st, const char *user, struct mp_principal **ret);
struct mp_principal *mp_principal_free(struct mp_principal *p);
const char *mp_principal_name(const struct mp_principal *p);

/* Whether perm is held on dev; *ret_role (may be NULL) names the role
 * that grants it. */
bool mp_principal_can(const struct mp_principal *p, enum mp_perm perm, const struct mp_rbac_device *dev,
                      const char **ret_role);
/* Whether perm is held through any grant (on some devices at least). */
bool mp_principal_has(const struct mp_principal *p, enum mp_perm perm, const char **ret_role);
/* Whether the named collection holds dev. -ENOENT: no such collection. */
int mp_collection_holds(struct mp_store *st, const char *name, const struct mp_rbac_device *dev, bool *ret);
/* The permissions held anywhere, and the grants, for GET /api/v1/me. */
json_object *mp_principal_json(const struct mp_principal *p);
