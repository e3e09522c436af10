/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key rotation (see rotation.h): the two signature inputs of version 1.1,
 * and the site key chain with its walk, its overlap and its text form.
 */
#include "transport/rotation.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/strutil.h"
#include "transport/sign.h"

#define CHAIN_FILE_MAX (256u * 1024u)

struct link {
        uint32_t serial;
        char not_before[TETHER_TIMESTAMP_LEN]; /* "" for the root */
        time_t not_before_time;
        struct tether_key *key;
        char *public_key; /* base64 DER, NULL for the root */
        char *signature;  /* base64, NULL for the root */
        time_t first_confirm;
};

struct tether_site_chain {
        struct link *links;
        size_t n;
};

/* ---- signature inputs ---- */

static int endorsement_body(uint32_t serial, const char *not_before, const uint8_t *der, size_t der_len,
                            uint8_t **ret, size_t *ret_len) {
        size_t len = 4 + (TETHER_TIMESTAMP_LEN - 1) + der_len;
        uint8_t *b;

        if (strlen(not_before) != TETHER_TIMESTAMP_LEN - 1 || !der || der_len == 0)
                return -EINVAL;
        b = malloc(len);
        if (!b)
                return -ENOMEM;
        b[0] = (uint8_t)(serial >> 24);
        b[1] = (uint8_t)(serial >> 16);
        b[2] = (uint8_t)(serial >> 8);
        b[3] = (uint8_t)serial;
        memcpy(b + 4, not_before, TETHER_TIMESTAMP_LEN - 1);
        memcpy(b + 4 + TETHER_TIMESTAMP_LEN - 1, der, der_len);
        *ret = b;
        *ret_len = len;
        return 0;
}

static int sign_b64(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t len,
                    char **ret) {
        _cleanup_(freep) uint8_t *sig = NULL;
        size_t sig_len = 0;
        int r;

        r = tether_sign(key, type, body, len, &sig, &sig_len);
        if (r < 0)
                return r;
        return tether_base64_encode(sig, sig_len, ret);
}

static int verify_b64(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t len,
                      const char *sig_b64) {
        _cleanup_(freep) uint8_t *sig = NULL;
        size_t sig_len = 0;

        if (!sig_b64 || tether_base64_decode(sig_b64, &sig, &sig_len) < 0)
                return -EBADMSG;
        return tether_verify(key, type, body, len, sig, sig_len);
}

int tether_endorsement_sign(const struct tether_key *signer, uint32_t serial,
                            const char not_before[TETHER_TIMESTAMP_LEN], const uint8_t *der, size_t der_len,
                            char **ret_sig_b64) {
        _cleanup_(freep) uint8_t *body = NULL;
        size_t len;
        int r;

        r = endorsement_body(serial, not_before, der, der_len, &body, &len);
        if (r < 0)
                return r;
        return sign_b64(signer, TETHER_SIG_TYPE_ENDORSEMENT, body, len, ret_sig_b64);
}

int tether_endorsement_verify(const struct tether_key *signer, uint32_t serial,
                              const char not_before[TETHER_TIMESTAMP_LEN], const uint8_t *der,
                              size_t der_len, const char *sig_b64) {
        _cleanup_(freep) uint8_t *body = NULL;
        size_t len;
        int r;

        r = endorsement_body(serial, not_before, der, der_len, &body, &len);
        if (r < 0)
                return r == -EINVAL ? -EBADMSG : r;
        return verify_b64(signer, TETHER_SIG_TYPE_ENDORSEMENT, body, len, sig_b64);
}

static int rollover_body(const char *client_id, const struct tether_key *new_key, uint8_t **ret,
                         size_t *ret_len) {
        _cleanup_(freep) uint8_t *der = NULL;
        size_t der_len = 0, id_len = TETHER_GUID_LEN - 1;
        uint8_t *b;
        int r;

        if (!client_id || !tether_guid_valid(client_id))
                return -EINVAL;
        r = tether_key_spki_der(new_key, &der, &der_len);
        if (r < 0)
                return r;
        b = malloc(id_len + der_len);
        if (!b)
                return -ENOMEM;
        memcpy(b, client_id, id_len);
        memcpy(b + id_len, der, der_len);
        *ret = b;
        *ret_len = id_len + der_len;
        return 0;
}

int tether_rollover_sign(const struct tether_key *old_key, const char *client_id,
                         const struct tether_key *new_key, char **ret_sig_b64) {
        _cleanup_(freep) uint8_t *body = NULL;
        size_t len;
        int r;

        r = rollover_body(client_id, new_key, &body, &len);
        if (r < 0)
                return r;
        return sign_b64(old_key, TETHER_SIG_TYPE_ROLLOVER, body, len, ret_sig_b64);
}

int tether_rollover_verify(const struct tether_key *old_key, const char *client_id,
                           const struct tether_key *new_key, const char *sig_b64) {
        _cleanup_(freep) uint8_t *body = NULL;
        size_t len;
        int r;

        r = rollover_body(client_id, new_key, &body, &len);
        if (r < 0)
                return r == -EINVAL ? -EBADMSG : r;
        return verify_b64(old_key, TETHER_SIG_TYPE_ROLLOVER, body, len, sig_b64);
}

/* ---- the chain ---- */

static void link_done(struct link *l) {
        tether_key_free(l->key);
        free(l->public_key);
        free(l->signature);
}

struct tether_site_chain *tether_site_chain_free(struct tether_site_chain *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n; i++)
                link_done(&c->links[i]);
        free(c->links);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_site_chain *, tether_site_chain_free);

static int key_dup(const struct tether_key *k, struct tether_key **ret) {
        const struct tether_key *one[] = {k};

        /* A verifier of one key is a public copy of it. */
        return tether_key_verifier_of(one, 1, ret);
}

/* Takes ownership of l's pointers, also on failure. */
static int push_link(struct tether_site_chain *c, struct link *l) {
        struct link *grown = realloc(c->links, (c->n + 1) * sizeof(*grown));

        if (!grown) {
                link_done(l);
                return -ENOMEM;
        }
        c->links = grown;
        c->links[c->n++] = *l;
        return 0;
}

int tether_site_chain_new(const struct tether_key *root, struct tether_site_chain **ret) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *c = calloc(1, sizeof(*c));
        struct link l = {.serial = 1};
        int r;

        if (!c)
                return -ENOMEM;
        r = key_dup(root, &l.key);
        if (r < 0)
                return r;
        r = push_link(c, &l);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int tether_site_chain_copy(const struct tether_site_chain *c, struct tether_site_chain **ret) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *d = NULL;
        int r;

        r = tether_site_chain_new(c->links[0].key, &d);
        if (r < 0)
                return r;
        d->links[0].first_confirm = c->links[0].first_confirm;
        for (size_t i = 1; i < c->n; i++) {
                struct link l = c->links[i];

                l.key = NULL;
                l.public_key = strdup(c->links[i].public_key);
                l.signature = strdup(c->links[i].signature);
                r = l.public_key && l.signature ? key_dup(c->links[i].key, &l.key) : -ENOMEM;
                if (r < 0) {
                        link_done(&l);
                        return r;
                }
                r = push_link(d, &l);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

size_t tether_site_chain_len(const struct tether_site_chain *c) {
        return c->n;
}

const struct tether_key *tether_site_chain_key(const struct tether_site_chain *c, size_t i) {
        return i < c->n ? c->links[i].key : NULL;
}

time_t tether_site_chain_not_before(const struct tether_site_chain *c, size_t i) {
        return i < c->n ? c->links[i].not_before_time : 0;
}

time_t tether_site_chain_first_confirm(const struct tether_site_chain *c, size_t i) {
        return i < c->n ? c->links[i].first_confirm : 0;
}

bool tether_site_chain_mark_confirm(struct tether_site_chain *c, size_t i, time_t now) {
        if (i >= c->n || c->links[i].first_confirm != 0)
                return false;
        c->links[i].first_confirm = now;
        return true;
}

/* Checks one endorsement against the newest link; on success *ret is the
 * new link (owning copies). why says why not. */
static int check_link(const struct link *tip, const struct tether_endorsement *e, bool first, time_t now,
                      struct link *ret, char why[256]) {
        _cleanup_(freep) uint8_t *der = NULL;
        char fp[TETHER_FINGERPRINT_LEN] = "";
        size_t der_len = 0;
        struct link l = {0};
        int r;

        if (e->serial != tip->serial + 1) {
                snprintf(why, 256,
                         "serial gap: the endorsement after serial %" PRIu32 " has serial %" PRIu32,
                         tip->serial, e->serial);
                return -EBADMSG;
        }
        if (!e->public_key || tether_base64_decode(e->public_key, &der, &der_len) < 0 || der_len == 0) {
                snprintf(why, 256, "the PublicKey of serial %" PRIu32 " is not base64", e->serial);
                return -EBADMSG;
        }
        (void)tether_key_fingerprint(tip->key, fp);
        /* The link is verified before the key in it is parsed. */
        r = tether_endorsement_verify(tip->key, e->serial, e->not_before, der, der_len, e->signature);
        if (r == -EBADMSG) {
                if (first)
                        snprintf(why, 256,
                                 "endorsement by an unknown key: serial %" PRIu32
                                 " is not signed by the trusted key serial %" PRIu32 " (%.16s...)",
                                 e->serial, tip->serial, fp);
                else
                        snprintf(why, 256,
                                 "broken link: the endorsement of serial %" PRIu32
                                 " does not verify with serial %" PRIu32 " (%.16s...)",
                                 e->serial, tip->serial, fp);
                return r;
        }
        if (r < 0) {
                snprintf(why, 256, "cannot verify the endorsement of serial %" PRIu32 ": %s", e->serial,
                         strerror(-r));
                return r;
        }
        if (e->not_before_time > now + TETHER_NOT_BEFORE_MAX_AHEAD) {
                snprintf(why, 256, "NotBefore %s of serial %" PRIu32 " is more than %d days in the future",
                         e->not_before, e->serial, TETHER_NOT_BEFORE_MAX_AHEAD / 86400);
                return -EBADMSG;
        }
        r = tether_key_from_spki_der(der, der_len, &l.key);
        if (r < 0) {
                snprintf(why, 256, "the PublicKey of serial %" PRIu32 " is not a usable key", e->serial);
                return -EBADMSG;
        }
        l.serial = e->serial;
        memcpy(l.not_before, e->not_before, TETHER_TIMESTAMP_LEN);
        l.not_before_time = e->not_before_time;
        l.public_key = strdup(e->public_key);
        l.signature = strdup(e->signature);
        if (!l.public_key || !l.signature) {
                link_done(&l);
                return -ENOMEM;
        }
        *ret = l;
        return 0;
}

int tether_site_chain_extend(struct tether_site_chain *c, const struct tether_endorsement *e, size_t n,
                             time_t now, char why[256]) {
        int added = 0;

        why[0] = 0;
        for (size_t i = 0; i < n; i++) {
                struct link l;
                int r;

                if (e[i].serial <= c->links[c->n - 1].serial && e[i].serial >= 1)
                        continue; /* already held */
                r = check_link(&c->links[c->n - 1], &e[i], added == 0, now, &l, why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        break;
                r = push_link(c, &l);
                if (r < 0)
                        return r;
                added++;
        }
        return added;
}

size_t tether_site_chain_current(const struct tether_site_chain *c, time_t now) {
        size_t cur = 0;

        for (size_t i = 1; i < c->n; i++)
                if (c->links[i].not_before_time <= now)
                        cur = i;
        return cur;
}

bool tether_site_chain_accepts(const struct tether_site_chain *c, size_t i, time_t now, time_t overlap) {
        size_t cur = tether_site_chain_current(c, now);
        time_t since = c->links[cur].first_confirm;

        if (i == cur)
                return true;
        if (i > cur)
                return false;
        return since == 0 || now < since + overlap;
}

int tether_site_chain_verifier(const struct tether_site_chain *c, time_t now, time_t overlap,
                               struct tether_key **ret) {
        _cleanup_(freep) const struct tether_key **keys = calloc(c->n, sizeof(*keys));
        size_t cur = tether_site_chain_current(c, now), n = 0;

        if (!keys)
                return -ENOMEM;
        keys[n++] = c->links[cur].key;
        for (size_t i = cur; i-- > 0;)
                if (tether_site_chain_accepts(c, i, now, overlap))
                        keys[n++] = c->links[i].key;
        return tether_key_verifier_of(keys, n, ret);
}

int tether_site_chain_endorsements(const struct tether_site_chain *c, struct tether_endorsement **ret,
                                   size_t *ret_n) {
        struct tether_endorsement *e = NULL;

        if (c->n > 1) {
                e = calloc(c->n - 1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
        }
        for (size_t i = 1; i < c->n; i++) {
                e[i - 1].serial = c->links[i].serial;
                memcpy(e[i - 1].not_before, c->links[i].not_before, TETHER_TIMESTAMP_LEN);
                e[i - 1].not_before_time = c->links[i].not_before_time;
                e[i - 1].public_key = c->links[i].public_key;
                e[i - 1].signature = c->links[i].signature;
        }
        *ret = e;
        *ret_n = c->n - 1;
        return 0;
}

int tether_site_chain_append(struct tether_site_chain *c, const struct tether_key *signer,
                             const struct tether_key *new_key, time_t not_before) {
        _cleanup_(freep) uint8_t *der = NULL;
        struct link l = {.serial = c->links[c->n - 1].serial + 1, .not_before_time = not_before};
        size_t der_len = 0;
        int r;

        if (!tether_key_equal(signer, c->links[c->n - 1].key) || !tether_key_has_private(signer))
                return -EKEYREJECTED;
        r = tether_timestamp_format(not_before, l.not_before);
        if (r >= 0)
                r = tether_key_spki_der(new_key, &der, &der_len);
        if (r >= 0)
                r = tether_key_spki_base64(new_key, &l.public_key);
        if (r >= 0)
                r = tether_endorsement_sign(signer, l.serial, l.not_before, der, der_len, &l.signature);
        if (r >= 0)
                r = key_dup(new_key, &l.key);
        if (r < 0) {
                link_done(&l);
                return r;
        }
        return push_link(c, &l);
}

int tether_site_chain_format(const struct tether_site_chain *c, char **ret, size_t *ret_len) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return -ENOMEM;
        for (size_t i = 1; i < c->n; i++)
                fprintf(f, "%" PRIu32 " %s %s %s %lld\n", c->links[i].serial, c->links[i].not_before,
                        c->links[i].public_key, c->links[i].signature, (long long)c->links[i].first_confirm);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

/* One line of the text form; the strings are borrowed from line (which is
 * cut in place). */
static int parse_line(char *line, struct tether_endorsement *e, uint64_t *first, char why[256]) {
        char *f[6] = {0}, *rest = line;
        uint64_t serial;
        size_t n = 0;

        while (rest && n < 6)
                f[n++] = strsep(&rest, " ");
        if (n != 5 || parse_u64(f[0], 1, UINT32_MAX, &serial) < 0 ||
            strlen(f[1]) != TETHER_TIMESTAMP_LEN - 1 ||
            tether_timestamp_parse(f[1], &e->not_before_time) < 0 ||
            parse_u64(f[4], 0, INT64_MAX, first) < 0) {
                snprintf(why, 256, "malformed line '%.60s'", line);
                return -EBADMSG;
        }
        e->serial = (uint32_t)serial;
        memcpy(e->not_before, f[1], TETHER_TIMESTAMP_LEN);
        e->public_key = f[2];
        e->signature = f[3];
        return 0;
}

int tether_site_chain_parse(struct tether_site_chain *c, const char *text, size_t len, bool with_times,
                            time_t now, char why[256]) {
        _cleanup_(freep) char *copy = strndup(text, len);
        char *rest = copy, *line;

        why[0] = 0;
        if (!copy)
                return -ENOMEM;
        while (rest) {
                struct tether_endorsement e = {0};
                uint64_t first = 0;
                size_t before = c->n;
                int r;

                line = strsep(&rest, "\n");
                if (!line[0])
                        continue;
                r = parse_line(line, &e, &first, why);
                if (r < 0)
                        return r;
                r = tether_site_chain_extend(c, &e, 1, now, why);
                if (r < 0)
                        return r;
                if (r == 0 && why[0])
                        return -EBADMSG;
                if (with_times && c->n > before)
                        c->links[c->n - 1].first_confirm = (time_t)first;
        }
        return 0;
}

int tether_site_chain_save(const struct tether_site_chain *c, const char *path) {
        _cleanup_(freep) char *text = NULL;
        size_t len = 0;
        int r;

        r = tether_site_chain_format(c, &text, &len);
        if (r < 0)
                return r;
        return write_file_atomic(path, text, len, 0644, FSUTIL_DURABLE);
}

int tether_site_chain_load(struct tether_site_chain *c, const char *path, time_t now, char why[256]) {
        _cleanup_(freep) uint8_t *buf = NULL;
        size_t len = 0;
        int r;

        why[0] = 0;
        r = read_file_at(AT_FDCWD, path, CHAIN_FILE_MAX, &buf, &len);
        if (r < 0)
                return r;
        return tether_site_chain_parse(c, (const char *)buf, len, true, now, why);
}
