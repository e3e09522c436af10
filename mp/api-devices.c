/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The REST API's device endpoints: the list (server-side paging, filter,
 * sort), a device, the client actions with the connector's log lines, a
 * push's per-device state, approvals. Every device a caller may not read
 * is as if it did not exist (404); an action the caller may not run is
 * refused with 403 and its reason, nothing is pushed, and the refusal is
 * audited.
 */
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
        const char *template_id, *label;
        uint32_t task_type;
} actions[] = {
        {"RequestMachinePolicy", "Sync Machine Policy", 1},
        {"RequestUserPolicy", "Sync User Policy", 2},
        {"AppEvaluation", "App Evaluation", 3},
};

static const char *jstr(json_object *o, const char *key) {
        json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static struct mp_rbac_device rbac_dev(json_object *row) {
        return (struct mp_rbac_device){
                .client_id = jstr(row, "client_id"),
                .hostname = jstr(row, "hostname"),
                .status = jstr(row, "status"),
                .version = jstr(row, "version"),
        };
}

static void add_online(struct mp_server *srv, json_object *row) {
        const char *id = jstr(row, "client_id");
        struct mp_session *s = mp_session_find(srv, id);
        bool online = s && mp_session_online(srv, s, mp_now_usec());
        json_object *why = NULL;

        json_object_object_add(row, "online", json_object_new_boolean(online));
        if (online)
                json_object_object_add(row, "transport", json_object_new_string(s->https ? "https" : "tcp"));
        else if (srv->console && json_object_object_get_ex(srv->console->offline_reasons, id, &why))
                json_object_object_add(row, "offline_reason", json_object_get(why));
        else
                json_object_object_add(row, "offline_reason",
                                       json_object_new_string("no live connection to this MP"));
}

int api_visible_devices(struct api_req *q, json_object **ret) {
        return api_devices_for(q->srv, q->who, ret);
}

int api_devices_all(struct mp_server *srv, json_object **ret) {
        json_object *all = NULL;
        int r = mp_registry_devices_json(srv->reg, &all);

        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(all); i++)
                add_online(srv, json_object_array_get_idx(all, i));
        *ret = all;
        return 0;
}

int api_devices_filter(json_object *all, const struct mp_principal *who, json_object **ret) {
        json_object *out = json_object_new_array();

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < json_object_array_length(all); i++) {
                json_object *row = json_object_array_get_idx(all, i);
                struct mp_rbac_device d = rbac_dev(row);

                if (d.client_id && mp_principal_can(who, MP_PERM_DEVICES_READ, &d, NULL))
                        json_object_array_add(out, json_object_get(row));
        }
        *ret = out;
        return 0;
}

int api_devices_for(struct mp_server *srv, const struct mp_principal *who, json_object **ret) {
        _cleanup_(json_object_putp) json_object *all = NULL;
        int r = api_devices_all(srv, &all);

        return r < 0 ? r : api_devices_filter(all, who, ret);
}

static int cmp_rows(const void *a, const void *b, void *arg) {
        json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b, *vx = NULL, *vy = NULL;
        const char *key = arg;
        int c;

        json_object_object_get_ex(x, key, &vx);
        json_object_object_get_ex(y, key, &vy);
        if (strcmp(key, "online") == 0)
                c = (int)json_object_get_boolean(vx) - (int)json_object_get_boolean(vy);
        else
                c = strcasecmp(vx ? json_object_get_string(vx) : "", vy ? json_object_get_string(vy) : "");
        return c ? c : strcmp(jstr(x, "client_id"), jstr(y, "client_id"));
}

static bool row_matches(json_object *row, const char *text, const char *status, const char *online) {
        const char *h = jstr(row, "hostname"), *id = jstr(row, "client_id");
        json_object *v;

        if (text && !(h && strcasestr(h, text)) && !(id && strcasestr(id, text)))
                return false;
        if (status && (!jstr(row, "status") || strcmp(jstr(row, "status"), status) != 0))
                return false;
        if (online && json_object_object_get_ex(row, "online", &v) &&
            json_object_get_boolean(v) != (strcmp(online, "true") == 0))
                return false;
        return true;
}

static int list_params(struct api_req *q, uint64_t *offset, uint64_t *limit, const char **sort, bool *desc) {
        static const char *const sorts[] = {"hostname", "client_id", "status",
                                            "version",  "last_seen", "online"};
        const char *v;

        *offset = 0;
        *limit = 50;
        if ((v = api_query(q, "offset")) && parse_u64(v, 0, 1000000000, offset) < 0)
                return api_error(q, 400, "'offset' must be a number"), -EINVAL;
        if ((v = api_query(q, "limit")) && parse_u64(v, 1, API_MAX_PAGE, limit) < 0)
                return api_error(q, 400, "'limit' must be 1 .. %u", API_MAX_PAGE), -EINVAL;
        *sort = api_query(q, "sort") ? api_query(q, "sort") : "hostname";
        for (size_t i = 0; i < ELEMENTSOF(sorts); i++)
                if (strcmp(*sort, sorts[i]) == 0)
                        goto order;
        return api_error(q, 400, "'sort' must be hostname, client_id, status, version, last_seen or online"),
               -EINVAL;
order:
        v = api_query(q, "order");
        if (v && strcmp(v, "asc") != 0 && strcmp(v, "desc") != 0)
                return api_error(q, 400, "'order' must be asc or desc"), -EINVAL;
        *desc = v && strcmp(v, "desc") == 0;
        v = api_query(q, "online");
        if (v && strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
                return api_error(q, 400, "'online' must be true or false"), -EINVAL;
        v = api_query(q, "status");
        if (v && strcmp(v, "approved") != 0 && strcmp(v, "pending") != 0 && strcmp(v, "rejected") != 0)
                return api_error(q, 400, "'status' must be approved, pending or rejected"), -EINVAL;
        return 0;
}

/* GET /api/v1/devices?offset&limit&sort&order&q&status&online */
int api_devices_list(struct api_req *q) {
        _cleanup_(json_object_putp) json_object *all = NULL, *page = NULL, *o = NULL;
        _cleanup_(freep) json_object **rows = NULL;
        uint64_t offset, limit;
        const char *sort;
        size_t n = 0, total;
        bool desc;
        int r;

        if (list_params(q, &offset, &limit, &sort, &desc) < 0)
                return 0;
        r = api_visible_devices(q, &all);
        if (r < 0)
                return api_store_error(q, "devices", r);
        total = json_object_array_length(all);
        rows = calloc(total ? total : 1, sizeof(*rows));
        if (!rows)
                return -ENOMEM;
        for (size_t i = 0; i < total; i++) {
                json_object *row = json_object_array_get_idx(all, i);
                if (row_matches(row, api_query(q, "q"), api_query(q, "status"), api_query(q, "online")))
                        rows[n++] = row;
        }
        qsort_r(rows, n, sizeof(*rows), cmp_rows, (void *)sort);
        page = json_object_new_array();
        o = json_object_new_object();
        if (!page || !o)
                return -ENOMEM;
        for (uint64_t i = offset; i < n && i < offset + limit; i++)
                json_object_array_add(page, json_object_get(rows[desc ? n - 1 - i : i]));
        json_object_object_add(o, "total", json_object_new_int64((int64_t)n));
        json_object_object_add(o, "offset", json_object_new_int64((int64_t)offset));
        json_object_object_add(o, "limit", json_object_new_int64((int64_t)limit));
        json_object_object_add(o, "devices", TAKE_PTR(page));
        return api_json(q, 200, o, NULL, NULL);
}

/* The device row the caller may read, or NULL (a new reference). */
static int find_visible(struct api_req *q, const char *id, json_object **ret) {
        _cleanup_(json_object_putp) json_object *all = NULL;
        int r = api_visible_devices(q, &all);

        if (r < 0)
                return r;
        *ret = NULL;
        for (size_t i = 0; i < json_object_array_length(all); i++) {
                json_object *row = json_object_array_get_idx(all, i);
                if (strcasecmp(jstr(row, "client_id"), id) == 0) {
                        *ret = json_object_get(row);
                        break;
                }
        }
        return 0;
}

/* Why the caller may not run actions on this device, or NULL. */
static const char *action_refusal(struct api_req *q, json_object *row, char *buf, size_t size,
                                  const char **ret_role) {
        struct mp_rbac_device d = rbac_dev(row);

        if (!mp_principal_can(q->who, MP_PERM_ACTIONS_RUN, &d, ret_role)) {
                snprintf(buf, size, "user '%s' has no role granting actions.run on device %s", q->user,
                         d.hostname ? d.hostname : d.client_id);
                return buf;
        }
        if (!d.status || strcmp(d.status, "approved") != 0) {
                snprintf(buf, size, "device %s is %s, not approved", d.client_id,
                         d.status ? d.status : "unknown");
                return buf;
        }
        return NULL;
}

/* GET /api/v1/devices/ID: the row, and each action allowed or why not. */
int api_device_get(struct api_req *q, const char *id) {
        _cleanup_(json_object_putp) json_object *row = NULL;
        json_object *acts;
        char why[256];
        int r;

        r = find_visible(q, id, &row);
        if (r < 0)
                return api_store_error(q, "devices", r);
        if (!row)
                return api_error(q, 404, "no device with ClientID '%.64s' that you may see", id);
        acts = json_object_new_array();
        if (!acts)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(actions); i++) {
                json_object *a = json_object_new_object();
                const char *reason = action_refusal(q, row, why, sizeof(why), NULL);

                json_object_object_add(a, "action", json_object_new_string(actions[i].template_id));
                json_object_object_add(a, "label", json_object_new_string(actions[i].label));
                json_object_object_add(a, "allowed", json_object_new_boolean(!reason));
                json_object_object_add(a, "reason", reason ? json_object_new_string(reason) : NULL);
                json_object_array_add(acts, a);
        }
        json_object_object_add(row, "actions", acts);
        return api_json(q, 200, row, NULL, NULL);
}
