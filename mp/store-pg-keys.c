/* SPDX-License-Identifier: Apache-2.0 */
/* The PostgreSQL engine's key rotation ops (mp/store.h; PROTOCOL-v1 7.2,
 * 7.3): the site key serials each device was sent and confirmed, the rebind
 * of a device to its new key, and the key events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "mp/store-pg.h"
#include "mp/store.h"

#define PG(st) ((struct pg_store *)(st))

DEFINE_TRIVIAL_CLEANUP_FUNC(PGresult *, PQclear)

/* One statement each: with several nodes nothing may come between a read
 * and its write. */
int pg_site_key_sent(struct mp_store *st, const char *client_id, uint32_t serial, time_t now) {
        struct pg_args a = {};

        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, serial);
        pg_arg_i64(&a, now);
        return pg_write(PG(st), "site key sent",
                        "INSERT INTO device_site_keys (client_id, sent_serial, confirmed_serial, updated) "
                        "VALUES ($1, $2::bigint, 0, $3::bigint) ON CONFLICT (client_id) DO UPDATE SET "
                        "confirmed_serial = CASE WHEN device_site_keys.sent_serial > "
                        "device_site_keys.confirmed_serial THEN device_site_keys.sent_serial "
                        "ELSE device_site_keys.confirmed_serial END, "
                        "sent_serial = EXCLUDED.sent_serial, updated = EXCLUDED.updated "
                        "WHERE NOT (device_site_keys.sent_serial = EXCLUDED.sent_serial AND "
                        "device_site_keys.confirmed_serial = device_site_keys.sent_serial)",
                        &a, NULL);
}

int pg_site_key_confirmed(struct mp_store *st, const char *client_id, uint32_t serial, time_t now) {
        struct pg_args a = {};

        pg_arg_str(&a, client_id);
        pg_arg_i64(&a, serial);
        pg_arg_i64(&a, now);
        return pg_write(PG(st), "site key confirmed",
                        "INSERT INTO device_site_keys (client_id, sent_serial, confirmed_serial, updated) "
                        "VALUES ($1, $2::bigint, $2::bigint, $3::bigint) ON CONFLICT (client_id) DO UPDATE "
                        "SET sent_serial = GREATEST(device_site_keys.sent_serial, EXCLUDED.sent_serial), "
                        "confirmed_serial = EXCLUDED.confirmed_serial, updated = EXCLUDED.updated "
                        "WHERE device_site_keys.confirmed_serial <> EXCLUDED.confirmed_serial",
                        &a, NULL);
}

int pg_site_key_counts(struct mp_store *st, uint64_t *counts, size_t n) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        int r;

        memset(counts, 0, n * sizeof(*counts));
        r = pg_exec(PG(st), "site key counts",
                    "SELECT confirmed_serial, count(*) FROM device_site_keys GROUP BY confirmed_serial",
                    NULL, &res);
        if (r < 0)
                return r;
        for (int i = 0; i < PQntuples(res); i++) {
                int64_t serial = pg_i64(res, i, 0);

                if (serial >= 1 && (uint64_t)serial <= n)
                        counts[serial - 1] = (uint64_t)pg_i64(res, i, 1);
        }
        return 0;
}

int pg_device_rebind(struct mp_store *st, const char *client_id, const char *old_key, const char *new_key,
                     const char *new_fingerprint) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct pg_args a = {};
        int r;

        pg_arg_str(&a, client_id);
        pg_arg_str(&a, new_key);
        pg_arg_str(&a, new_fingerprint);
        pg_arg_str(&a, old_key);
        r = pg_write(PG(st), "device rebind",
                     "UPDATE devices SET public_key = $2, fingerprint = $3 WHERE client_id = $1 AND "
                     "public_key = $4",
                     &a, &res);
        if (r < 0)
                return r;
        return strcmp(PQcmdTuples(res), "1") == 0 ? 0 : -ESTALE;
}

int pg_key_event_insert(struct mp_store *st, const struct mp_key_event_new *ev) {
        struct pg_args a = {};

        pg_arg_str(&a, ev->client_id);
        pg_arg_str(&a, ev->kind);
        pg_arg_str(&a, ev->old_fingerprint);
        pg_arg_str(&a, ev->new_fingerprint);
        pg_arg_str(&a, ev->reason);
        pg_arg_str(&a, ev->hostname);
        pg_arg_str(&a, ev->address);
        pg_arg_i64(&a, ev->at);
        return pg_write(PG(st), "key event",
                        "INSERT INTO key_events (client_id, kind, old_fingerprint, new_fingerprint, reason, "
                        "hostname, address, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::bigint)",
                        &a, NULL);
}

static int fill_key_event(PGresult *res, int i, struct mp_key_event_rec *e) {
        bool oom = false;

        e->client_id = pg_str(res, i, 0, &oom);
        e->kind = pg_str(res, i, 1, &oom);
        e->old_fingerprint = pg_str(res, i, 2, &oom);
        e->new_fingerprint = pg_str(res, i, 3, &oom);
        e->reason = pg_str(res, i, 4, &oom);
        e->hostname = pg_str(res, i, 5, &oom);
        e->address = pg_str(res, i, 6, &oom);
        e->at = pg_i64(res, i, 7);
        return oom ? -ENOMEM : 0;
}

int pg_key_events(struct mp_store *st, struct mp_key_event_rec **ret, size_t *ret_n) {
        _cleanup_(PQclearp) PGresult *res = NULL;
        struct mp_key_event_rec *recs;
        int n, r;

        *ret = NULL;
        *ret_n = 0;
        r = pg_exec(
                PG(st), "key events",
                "SELECT client_id, kind, old_fingerprint, new_fingerprint, reason, hostname, address, at "
                "FROM key_events ORDER BY id DESC",
                NULL, &res);
        if (r < 0)
                return r;
        n = PQntuples(res);
        recs = calloc(n ? (size_t)n : 1, sizeof(*recs));
        if (!recs)
                return -ENOMEM;
        for (int i = 0; i < n && r >= 0; i++)
                r = fill_key_event(res, i, &recs[i]);
        if (r < 0) {
                mp_key_event_recs_free(recs, (size_t)n);
                return r;
        }
        *ret = recs;
        *ret_n = (size_t)n;
        return 0;
}
