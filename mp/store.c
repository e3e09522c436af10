/* SPDX-License-Identifier: Apache-2.0 */
/* The store's engine choice and the record helpers both engines share. */
#include "mp/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

bool mp_store_spec_is_pg(const char *spec) {
        return spec && (strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0 ||
                        strncmp(spec, "pg:", 3) == 0);
}

int mp_store_open(const char *spec, struct mp_store **ret) {
        if (!spec || !*spec)
                return -EINVAL;
        if (mp_store_spec_is_pg(spec))
                return mp_store_open_pg(strncmp(spec, "pg:", 3) == 0 ? spec + 3 : spec, ret);
        return mp_store_open_sqlite(spec, ret);
}

struct mp_store *mp_store_free(struct mp_store *st) {
        if (st)
                st->ops->free(st);
        return NULL;
}

int mp_store_check_version(const char *engine, const char *where, int found) {
        if (found <= MP_STORE_SCHEMA_VERSION)
                return 0;
        log_error("The %s records at %s have schema version %d, newer than this tether-mp knows (%d): "
                  "run the tether-mp that wrote them, or a newer one",
                  engine, where, found, MP_STORE_SCHEMA_VERSION);
        return -EPROTONOSUPPORT;
}

int mp_store_grow(void *arr, size_t elem, size_t n, size_t *cap) {
        void **p = arr;

        if (n >= *cap) {
                size_t ncap = *cap ? *cap * 2 : 16;
                void *t = realloc(*p, ncap * elem);
                if (!t)
                        return -ENOMEM;
                *p = t;
                *cap = ncap;
        }
        memset((char *)*p + n * elem, 0, elem);
        return 0;
}

void mp_device_recs_free(struct mp_device_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].client_id);
                free(r[i].hostname);
                free(r[i].version);
                free(r[i].fingerprint);
                free(r[i].address);
                free(r[i].conflict);
                free(r[i].node);
        }
        free(r);
}

void mp_conflict_recs_free(struct mp_conflict_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].client_id);
                free(r[i].kind);
                free(r[i].known_fingerprint);
                free(r[i].offered_fingerprint);
                free(r[i].hostname);
                free(r[i].address);
                free(r[i].established_hostname);
                free(r[i].established_address);
        }
        free(r);
}

void mp_push_rec_done(struct mp_push_rec *p) {
        free(p->task_guid);
        free(p->task_param);
        p->task_guid = p->task_param = NULL;
}

void mp_target_recs_free(struct mp_target_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].client_id);
                free(r[i].detail);
                free(r[i].response_xml);
                free(r[i].signature_hex);
        }
        free(r);
}

void mp_response_recs_free(struct mp_response_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].client_id);
                free(r[i].task_guid);
                free(r[i].detail);
                free(r[i].response_xml);
                free(r[i].signature_hex);
                free(r[i].address);
        }
        free(r);
}

void mp_frame_recs_free(struct mp_frame_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].frame);
                free(r[i].client_id);
        }
        free(r);
}

void mp_key_event_recs_free(struct mp_key_event_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].client_id);
                free(r[i].kind);
                free(r[i].old_fingerprint);
                free(r[i].new_fingerprint);
                free(r[i].reason);
                free(r[i].hostname);
                free(r[i].address);
        }
        free(r);
}

void mp_strv_free(char **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

void mp_doc_recs_free(struct mp_doc_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].name);
                free(r[i].body);
        }
        free(r);
}

void mp_audit_recs_free(struct mp_audit_rec *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].actor);
                free(r[i].address);
                free(r[i].action);
                free(r[i].target);
                free(r[i].outcome);
                free(r[i].detail);
                free(r[i].prev_hash);
                free(r[i].hash);
        }
        free(r);
}
