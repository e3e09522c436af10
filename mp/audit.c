/* SPDX-License-Identifier: Apache-2.0 */
/* The hash-chained audit log (mp/audit.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "mp/audit.h"

static int feed(EVP_MD_CTX *md, const char *v) {
        char len[32];
        int n;

        n = v ? snprintf(len, sizeof(len), "%zu:", strlen(v)) : snprintf(len, sizeof(len), "-:");
        if (EVP_DigestUpdate(md, len, (size_t)n) != 1 || (v && EVP_DigestUpdate(md, v, strlen(v)) != 1) ||
            EVP_DigestUpdate(md, "\n", 1) != 1)
                return -EIO;
        return 0;
}

int mp_audit_hash(const struct mp_audit_rec *r, char ret[65]) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char out[32];
        unsigned int outlen = 0;
        char seq[32], tm[32];
        int rc = -EIO;

        if (!md)
                return -ENOMEM;
        snprintf(seq, sizeof(seq), "%lld", (long long)r->seq);
        snprintf(tm, sizeof(tm), "%lld", (long long)r->time);
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && feed(md, seq) >= 0 && feed(md, tm) >= 0 &&
            feed(md, r->actor) >= 0 && feed(md, r->address) >= 0 && feed(md, r->action) >= 0 &&
            feed(md, r->target) >= 0 && feed(md, r->outcome) >= 0 && feed(md, r->detail) >= 0 &&
            feed(md, r->prev_hash) >= 0 && EVP_DigestFinal_ex(md, out, &outlen) == 1 && outlen == 32) {
                hex_encode(out, 32, ret);
                rc = 0;
        }
        EVP_MD_CTX_free(md);
        return rc;
}

static int append_once(struct mp_store *st, const struct mp_audit_entry *e, int64_t *ret_seq) {
        char prev[65], hash[65];
        struct mp_audit_rec rec = {
                .time = e->now,
                .actor = (char *)e->actor,
                .address = (char *)e->address,
                .action = (char *)e->action,
                .target = (char *)e->target,
                .outcome = (char *)e->outcome,
                .detail = (char *)e->detail,
                .prev_hash = prev,
                .hash = hash,
        };
        int64_t last;
        int r;

        r = st->ops->audit_last(st, &last, prev);
        if (r < 0)
                return r;
        rec.seq = last + 1;
        r = mp_audit_hash(&rec, hash);
        if (r >= 0)
                r = st->ops->audit_append(st, &rec);
        if (r >= 0 && ret_seq)
                *ret_seq = rec.seq;
        return r;
}

/* Another node may take the next seq first (-EEXIST): read the chain's end
 * again and link to its record. */
int mp_audit_append(struct mp_store *st, const struct mp_audit_entry *e, int64_t *ret_seq) {
        int r = -EEXIST;

        for (int i = 0; i < 5 && r == -EEXIST; i++)
                r = append_once(st, e, ret_seq);
        return r;
}

/* Checks one record against its predecessor's seq and hash. */
static const char *check_one(const struct mp_audit_rec *a, int64_t prev_seq, const char *prev_hash) {
        char want[65];

        if (a->seq != prev_seq + 1)
                return "a record is missing before it (sequence gap)";
        if (!a->prev_hash || strcmp(a->prev_hash, prev_hash) != 0)
                return "its prev_hash is not the previous record's hash";
        if (mp_audit_hash(a, want) < 0)
                return "its hash cannot be computed";
        if (!a->hash || strcmp(a->hash, want) != 0)
                return "its fields do not match its hash (the record was edited)";
        return NULL;
}

int mp_audit_verify(struct mp_store *st, size_t *ret_n, int64_t *ret_bad_seq, char **ret_reason) {
        char prev_hash[65];
        int64_t prev_seq = 0;
        size_t total = 0;
        int r;

        memset(prev_hash, '0', 64);
        prev_hash[64] = 0;
        for (;;) {
                struct mp_audit_rec *recs = NULL;
                size_t n = 0;

                r = st->ops->audit_list(st, prev_seq, 1000, &recs, &n);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++) {
                        const char *why = check_one(&recs[i], prev_seq, prev_hash);

                        if (why) {
                                *ret_bad_seq = recs[i].seq;
                                *ret_reason = strdup(why);
                                mp_audit_recs_free(recs, n);
                                return *ret_reason ? -EBADMSG : -ENOMEM;
                        }
                        prev_seq = recs[i].seq;
                        strscpy(prev_hash, sizeof(prev_hash), recs[i].hash);
                }
                total += n;
                mp_audit_recs_free(recs, n);
                if (n < 1000)
                        break;
        }
        *ret_n = total;
        return 0;
}

static void add_str(json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

json_object *mp_audit_rec_json(const struct mp_audit_rec *r) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "seq", json_object_new_int64(r->seq));
        json_object_object_add(o, "time", json_object_new_int64(r->time));
        add_str(o, "actor", r->actor);
        add_str(o, "address", r->address);
        add_str(o, "action", r->action);
        add_str(o, "target", r->target);
        add_str(o, "outcome", r->outcome);
        add_str(o, "detail", r->detail);
        add_str(o, "prev_hash", r->prev_hash);
        add_str(o, "hash", r->hash);
        return o;
}
