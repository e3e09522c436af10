/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client actions (the console's three buttons, POST /api/v1/actions and
 * /api/v1/devices/ID/actions), with the connector's log lines of the seeds:
 *
 *   Received new notification. Validating basic notification details...
 *   Validating device action message content...
 *   Authorized to perform client action. TemplateID: T User: U Role: R
 *     (or Unauthorized to perform client action. TemplateID: T User: U)
 *   Forwarded BGB remote task. TemplateID: N TaskGuid: G TaskParam: P TargetDeviceIDs: IDS
 *
 * followed by the MP's own "Starting to send push task ..." with the same
 * TaskGUID. Also a push's per-device state and the device approvals.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/api.h"
#include "mp/mp.h"
#include "transport/guid.h"

#define STORE(q) mp_registry_store((q)->srv->reg)

static const struct {
        const char *template_id;
        uint32_t task_type;
} templates[] = {
        {"RequestMachinePolicy", 1},
        {"RequestUserPolicy", 2},
        {"AppEvaluation", 3},
};

static const char *jstr(json_object *o, const char *key) {
        json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static struct mp_rbac_device rbac_dev(json_object *row) {
        return (struct mp_rbac_device){jstr(row, "client_id"), jstr(row, "hostname"), jstr(row, "status"),
                                       jstr(row, "version")};
}

struct action_ctx {
        const char *template_id;
        uint32_t task_type;
        const char *param;
        json_object *visible; /* the caller's devices */
        json_object *index;   /* the same by ClientID (visible_index) */
        char **ids;           /* the targets' ClientIDs (borrowed) */
        size_t n;
        const char *role;
};

/* One device of the list (a scan: for one lookup). */
static json_object *visible_find(json_object *visible, const char *id) {
        for (size_t i = 0; i < json_object_array_length(visible); i++) {
                json_object *row = json_object_array_get_idx(visible, i);
                if (strcasecmp(jstr(row, "client_id"), id) == 0)
                        return row;
        }
        return NULL;
}

/* Lower-cases a ClientID into key (false when it cannot be one: too long). */
static bool index_key(const char *id, char key[128]) {
        size_t i;

        for (i = 0; id && id[i] && i < 127; i++)
                key[i] = (char)tolower((unsigned char)id[i]);
        key[i] = 0;
        return id && !id[i];
}

/* The caller's devices by lower-case ClientID: one hash lookup per target
 * (a scan of the list per target made an action on, or a read of, a push
 * to 10,000 devices take seconds). Owned by the caller. */
static json_object *visible_index(json_object *visible) {
        json_object *idx = json_object_new_object();
        char key[128];

        for (size_t i = 0; idx && i < json_object_array_length(visible); i++) {
                json_object *row = json_object_array_get_idx(visible, i);
                if (index_key(jstr(row, "client_id"), key))
                        json_object_object_add(idx, key, json_object_get(row));
        }
        return idx;
}

static json_object *visible_row(json_object *index, const char *id) {
        json_object *row = NULL;
        char key[128];

        return index_key(id, key) && json_object_object_get_ex(index, key, &row) ? row : NULL;
}

/* The targets: one device, a list, or a collection's devices the caller sees. */
static int collect_targets(struct api_req *q, json_object *body, const char *device_id,
                           struct action_ctx *a) {
        json_object *targets = NULL, *coll = NULL;
        size_t n_vis = json_object_array_length(a->visible);
        int r;

        json_object_object_get_ex(body, "targets", &targets);
        json_object_object_get_ex(body, "collection", &coll);
        if (!!device_id + !!targets + !!coll != 1)
                return api_error(q, 400,
                                 "name the devices once: the URL's device, \"targets\" or \"collection\""),
                       -EINVAL;
        a->ids = calloc(n_vis + 1 + (targets ? json_object_array_length(targets) : 0), sizeof(char *));
        if (!a->ids)
                return -ENOMEM;
        if (device_id)
                a->ids[a->n++] = (char *)device_id;
        for (size_t i = 0; targets && i < json_object_array_length(targets); i++) {
                json_object *v = json_object_array_get_idx(targets, i);
                if (!json_object_is_type(v, json_type_string))
                        return api_error(q, 400, "\"targets\" must be ClientID strings"), -EINVAL;
                a->ids[a->n++] = (char *)json_object_get_string(v);
        }
        for (size_t i = 0; coll && i < n_vis; i++) {
                json_object *row = json_object_array_get_idx(a->visible, i);
                struct mp_rbac_device d = rbac_dev(row);
                bool in = false;

                r = mp_collection_holds(STORE(q), json_object_get_string(coll), &d, &in);
                if (r == -ENOENT)
                        return api_error(q, 404, "no collection '%.64s'", json_object_get_string(coll)),
                               -EINVAL;
                if (r < 0)
                        return api_store_error(q, "collection", r), r;
                if (in && d.status && strcmp(d.status, "approved") == 0)
                        a->ids[a->n++] = (char *)d.client_id;
        }
        if (a->n == 0)
                return api_error(q, 400, "the collection holds no approved device you may see"), -EINVAL;
        if (a->n > 100000)
                return api_error(q, 400, "too many targets"), -EINVAL;
        return 0;
}

/* Every target must be visible, approved and within an actions.run grant. */
static int authorize(struct api_req *q, struct action_ctx *a) {
        for (size_t i = 0; i < a->n; i++) {
                json_object *row = visible_row(a->index, a->ids[i]);
                struct mp_rbac_device d;
                const char *role = NULL;

                if (!row) {
                        log_info("Unauthorized to perform client action. TemplateID: %s User: %s",
                                 a->template_id, q->user);
                        (void)api_audit(q, "device.action", a->ids[i], "denied",
                                        "no such device in the caller's scope");
                        return api_error(q, 404, "no device with ClientID '%.64s' that you may see",
                                         a->ids[i]),
                               -EPERM;
                }
                d = rbac_dev(row);
                if (!mp_principal_can(q->who, MP_PERM_ACTIONS_RUN, &d, &role)) {
                        log_info("Unauthorized to perform client action. TemplateID: %s User: %s",
                                 a->template_id, q->user);
                        return api_deny(q, "device.action", d.client_id,
                                        "user '%s' has no role granting actions.run on device %s (%s)",
                                        q->user, d.hostname ? d.hostname : "?", d.client_id),
                               -EPERM;
                }
                if (!d.status || strcmp(d.status, "approved") != 0)
                        return api_error(q, 409, "device %s is %s, not approved: nothing was sent",
                                         d.client_id, d.status ? d.status : "unknown"),
                               -EPERM;
                a->ids[i] = (char *)d.client_id; /* the stored spelling */
                if (!a->role)
                        a->role = role;
        }
        return 0;
}

static int parse_action(struct api_req *q, json_object *body, struct action_ctx *a) {
        const char *t = jstr(body, "action");

        for (size_t i = 0; t && i < ELEMENTSOF(templates); i++)
                if (strcmp(t, templates[i].template_id) == 0) {
                        a->template_id = templates[i].template_id;
                        a->task_type = templates[i].task_type;
                }
        if (!a->template_id)
                return api_error(q, 400,
                                 "\"action\" must be RequestMachinePolicy, RequestUserPolicy or "
                                 "AppEvaluation"),
                       -EINVAL;
        a->param = jstr(body, "param") ? jstr(body, "param") : "";
        if (strlen(a->param) > 1024)
                return api_error(q, 400, "\"param\" is longer than 1024 characters"), -EINVAL;
        return 0;
}

static int forward(struct api_req *q, struct action_ctx *a) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(freep) char *ids = NULL;
        struct mp_push_request pr = {
                .task_type = a->task_type, .task_param = a->param, .targets = a->ids, .n_targets = a->n};
        char guid[TETHER_GUID_LEN], got[TETHER_GUID_LEN], detail[160];
        size_t len = 0, n_targets = 0;
        uint64_t push_id;
        FILE *f;
        int r;

        r = tether_guid_new(guid);
        if (r < 0)
                return r;
        pr.task_guid = guid;
        f = open_memstream(&ids, &len);
        for (size_t i = 0; f && i < a->n; i++)
                fprintf(f, "%s%s", i ? "," : "", a->ids[i]);
        if (!f || fclose(f) != 0)
                return -ENOMEM;
        /* The record first: an action that cannot be audited is not run. */
        snprintf(detail, sizeof(detail), "%s TaskGUID %s", a->template_id, guid);
        r = api_audit(q, "device.action", ids, "ok", detail);
        if (r < 0)
                return api_store_error(q, "audit log (nothing was pushed)", r);
        log_info("Forwarded BGB remote task. TemplateID: %u TaskGuid: %s TaskParam: %s TargetDeviceIDs: %s",
                 a->task_type, guid, a->param, ids);
        r = mp_push_start(q->srv, &pr, &push_id, got, &n_targets);
        if (r < 0) {
                (void)api_audit(q, "device.action", ids, "failed", strerror(-r));
                return api_store_error(q, "push", r);
        }
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "push_id", json_object_new_int64((int64_t)push_id));
        json_object_object_add(o, "task_guid", json_object_new_string(got));
        json_object_object_add(o, "action", json_object_new_string(a->template_id));
        json_object_object_add(o, "targets", json_object_new_int64((int64_t)n_targets));
        return api_json(q, 202, o, NULL, NULL);
}

int api_action(struct api_req *q, const char *device_id) {
        static const char *const allowed[] = {"actions", "params", "targetsa", "collections", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *visible = NULL, *index = NULL;
        struct action_ctx a = {};
        int r;

        log_info("Received new notification. Validating basic notification details...");
        if (api_body(q, &body, allowed) < 0)
                return 0;
        log_info("Validating device action message content...");
        if (parse_action(q, body, &a) < 0)
                return 0;
        r = api_visible_devices(q, &visible);
        if (r < 0)
                return api_store_error(q, "devices", r);
        a.visible = visible;
        a.index = index = visible_index(visible);
        if (!index)
                return -ENOMEM;
        r = collect_targets(q, body, device_id, &a);
        if (r >= 0)
                r = authorize(q, &a);
        if (r >= 0) {
                log_info("Authorized to perform client action. TemplateID: %s User: %s Role: %s",
                         a.template_id, q->user, a.role);
                r = forward(q, &a);
        }
        free(a.ids);
        return q->queued ? 0 : r;
}

/* GET /api/v1/pushes/ID: the rows of the devices the caller may see. */
int api_push_get(struct api_req *q, const char *id) {
        _cleanup_(json_object_putp) json_object *o = NULL, *visible = NULL, *mine = NULL, *index = NULL;
        json_object *targets;
        uint64_t push_id;
        bool done = false;
        int r;

        if (parse_u64(id, 1, INT64_MAX, &push_id) < 0)
                return api_error(q, 400, "bad PushID '%.32s'", id);
        r = mp_registry_push_json(q->srv->reg, push_id, time(NULL), &o, &done);
        if (r == -ENOENT)
                return api_error(q, 404, "no push %llu", (unsigned long long)push_id);
        if (r < 0)
                return api_store_error(q, "push", r);
        r = api_visible_devices(q, &visible);
        if (r < 0)
                return api_store_error(q, "devices", r);
        mine = json_object_new_array();
        index = visible_index(visible);
        if (!mine || !index)
                return -ENOMEM;
        if (json_object_object_get_ex(o, "targets", &targets))
                for (size_t i = 0; i < json_object_array_length(targets); i++) {
                        json_object *t = json_object_array_get_idx(targets, i), *row;
                        row = visible_row(index, jstr(t, "client_id"));
                        if (!row)
                                continue;
                        json_object_object_add(t, "hostname",
                                               json_object_get(json_object_object_get(row, "hostname")));
                        json_object_object_add(t, "online",
                                               json_object_get(json_object_object_get(row, "online")));
                        json_object_array_add(mine, json_object_get(t));
                }
        if (json_object_array_length(mine) == 0)
                return api_error(q, 404, "no push %llu on devices you may see", (unsigned long long)push_id);
        json_object_object_add(o, "targets", TAKE_PTR(mine));
        json_object_object_add(o, "done", json_object_new_boolean(done));
        return api_json(q, 200, o, NULL, NULL);
}

/* GET /api/v1/approvals: the pending devices the caller may decide. */
int api_approvals_list(struct api_req *q) {
        _cleanup_(json_object_putp) json_object *visible = NULL, *o = NULL, *out = json_object_new_array();
        int r;

        if (!out)
                return -ENOMEM;
        if (!mp_principal_has(q->who, MP_PERM_DEVICES_APPROVE, NULL))
                return api_deny(q, "approvals.read", NULL, "user '%s' has no role granting devices.approve",
                                q->user);
        r = api_visible_devices(q, &visible);
        if (r < 0)
                return api_store_error(q, "devices", r);
        for (size_t i = 0; i < json_object_array_length(visible); i++) {
                json_object *row = json_object_array_get_idx(visible, i);
                struct mp_rbac_device d = rbac_dev(row);
                if (d.status && strcmp(d.status, "pending") == 0 &&
                    mp_principal_can(q->who, MP_PERM_DEVICES_APPROVE, &d, NULL))
                        json_object_array_add(out, json_object_get(row));
        }
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "pending", TAKE_PTR(out));
        return api_json(q, 200, o, NULL, NULL);
}

/* POST /api/v1/approvals/ID {"decision": "approve"|"reject"} */
int api_approval_decide(struct api_req *q, const char *id) {
        static const char *const allowed[] = {"decisions", NULL};
        _cleanup_(json_object_putp) json_object *body = NULL, *visible = NULL, *o = NULL;
        enum mp_device_status st;
        json_object *row;
        const char *dec;
        struct mp_rbac_device d;
        int r;

        if (api_body(q, &body, allowed) < 0)
                return 0;
        dec = jstr(body, "decision");
        if (!dec || (strcmp(dec, "approve") != 0 && strcmp(dec, "reject") != 0))
                return api_error(q, 400, "\"decision\" must be approve or reject");
        st = strcmp(dec, "approve") == 0 ? MP_DEVICE_APPROVED : MP_DEVICE_REJECTED;
        r = api_visible_devices(q, &visible);
        if (r < 0)
                return api_store_error(q, "devices", r);
        row = visible_find(visible, id);
        if (!row)
                return api_error(q, 404, "no device with ClientID '%.64s' that you may see", id);
        d = rbac_dev(row);
        if (!mp_principal_can(q->who, MP_PERM_DEVICES_APPROVE, &d, NULL))
                return api_deny(q, "device.approval", d.client_id,
                                "user '%s' has no role granting devices.approve on %s", q->user,
                                d.client_id);
        r = mp_registry_set_status(q->srv->reg, d.client_id, st);
        if (r < 0)
                return api_store_error(q, "approval", r);
        mp_session_decided(q->srv, d.client_id, st);
        (void)api_audit(q, "device.approval", d.client_id, "ok", dec);
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "client_id", json_object_new_string(d.client_id));
        json_object_object_add(o, "status", json_object_new_string(mp_device_status_name(st)));
        return api_json(q, 200, o, NULL, NULL);
}
