/* SPDX-License-Identifier: Apache-2.0 */
/* Accounts, sessions, tokens and login rate limiting (mp/auth.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/strutil.h"
#include "mp/auth.h"
#include "mp/rbac.h"
#include "mp/util.h"

#define ARGON2_T 2
#define ARGON2_M_KIB 19456
#define ARGON2_P 1
#define SALT_LEN 16
#define HASH_LEN 32
#define MAX_SESSIONS 10000
#define MAX_FAIL_KEYS 4096

struct session {
        struct session *next;
        char id_hash[MP_AUTH_SECRET_LEN];
        char csrf[MP_AUTH_SECRET_LEN];
        char *user;
        time_t created, last_used;
};

struct fail_entry {
        char key[160]; /* "u:NAME" or "a:ADDRESS" */
        time_t first;
        unsigned count;
};

struct mp_auth {
        char *dummy_hash; /* verified for unknown users: same time as a known one */
        struct session *sessions;
        size_t n_sessions;
        struct fail_entry *fails; /* MAX_FAIL_KEYS slots; count 0 is free */
};

int mp_auth_new(struct mp_auth **ret) {
        struct mp_auth *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        a->fails = calloc(MAX_FAIL_KEYS, sizeof(*a->fails));
        if (!a->fails || mp_auth_password_hash("tether: no such user", &a->dummy_hash) < 0) {
                free(a->fails);
                free(a);
                return -ENOMEM;
        }
        *ret = a;
        return 0;
}

static void session_free(struct session *s) {
        free(s->user);
        free(s);
}

struct mp_auth *mp_auth_free(struct mp_auth *a) {
        if (!a)
                return NULL;
        while (a->sessions) {
                struct session *s = a->sessions;
                a->sessions = s->next;
                session_free(s);
        }
        free(a->fails);
        free(a->dummy_hash);
        free(a);
        return NULL;
}

static int random_fill(void *buf, size_t len) {
        for (size_t have = 0; have < len;) {
                ssize_t n = getrandom((uint8_t *)buf + have, len - have, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                have += (size_t)n;
        }
        return 0;
}

static void sha256_hex(const char *text, char out[MP_AUTH_SECRET_LEN]) {
        unsigned char md[32];
        unsigned int len = 0;

        if (EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) != 1 || len != 32)
                memset(md, 0, sizeof(md)); /* never matches a stored hash of real input */
        hex_encode(md, 32, out);
}

static int random_hex(char out[MP_AUTH_SECRET_LEN]) {
        uint8_t b[32];
        int r = random_fill(b, sizeof(b));

        if (r < 0)
                return r;
        hex_encode(b, sizeof(b), out);
        return 0;
}

/* base64url without padding of len random bytes. */
static int random_b64url(size_t len, char *out, size_t size) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        uint8_t b[64];
        size_t o = 0;
        int r;

        if (len > sizeof(b) || size < (len * 4 + 2) / 3 + 1)
                return -EINVAL;
        r = random_fill(b, len);
        if (r < 0)
                return r;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0) |
                             (i + 2 < len ? b[i + 2] : 0);
                size_t chars = i + 2 < len ? 4 : i + 1 < len ? 3 : 2;
                for (size_t k = 0; k < chars; k++)
                        out[o++] = alphabet[(v >> (18 - 6 * k)) & 63];
        }
        out[o] = 0;
        return 0;
}

bool mp_auth_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return false;
        }
        return true;
}

int mp_auth_password_hash(const char *password, char **ret_encoded) {
        uint8_t salt[SALT_LEN];
        size_t len = argon2_encodedlen(ARGON2_T, ARGON2_M_KIB, ARGON2_P, SALT_LEN, HASH_LEN, Argon2_id);
        char *enc;
        int r;

        r = random_fill(salt, sizeof(salt));
        if (r < 0)
                return r;
        enc = malloc(len);
        if (!enc)
                return -ENOMEM;
        if (argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, password, strlen(password), salt,
                                  sizeof(salt), HASH_LEN, enc, len) != ARGON2_OK) {
                free(enc);
                return -EIO;
        }
        *ret_encoded = enc;
        return 0;
}

int mp_auth_password_verify(const char *encoded, const char *password) {
        return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK ? 0 : -EACCES;
}

int mp_auth_password_generate(char **ret) {
        char buf[32];
        int r = random_b64url(15, buf, sizeof(buf));

        if (r < 0)
                return r;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

static int check_grant(struct mp_store *st, const char *role, const char *collection) {
        _cleanup_(freep) char *body = NULL;
        unsigned perms;
        int r;

        r = mp_role_perms(st, role, &perms);
        if (r < 0)
                return r;
        if (strcmp(collection, MP_ALL_DEVICES) == 0)
                return 0;
        return st->ops->doc_get(st, "collection", collection, &body);
}

int mp_auth_user_add(struct mp_store *st, const char *name, const char *role, const char *collection,
                     const char *password, time_t now, char **ret_password) {
        _cleanup_(json_object_putp) json_object *doc = NULL;
        _cleanup_(freep) char *generated = NULL, *hash = NULL, *existing = NULL;
        json_object *grants, *g;
        int r;

        if (!mp_auth_name_valid(name))
                return -EINVAL;
        r = check_grant(st, role, collection);
        if (r < 0)
                return r;
        r = st->ops->doc_get(st, "user", name, &existing);
        if (r >= 0)
                return -EEXIST;
        if (r != -ENOENT)
                return r;
        if (!password) {
                r = mp_auth_password_generate(&generated);
                if (r < 0)
                        return r;
                password = generated;
        }
        r = mp_auth_password_hash(password, &hash);
        if (r < 0)
                return r;
        doc = json_object_new_object();
        grants = json_object_new_array();
        g = json_object_new_object();
        if (!doc || !grants || !g) {
                json_object_put(grants);
                json_object_put(g);
                return -ENOMEM;
        }
        json_object_object_add(g, "role", json_object_new_string(role));
        json_object_object_add(g, "collection", json_object_new_string(collection));
        json_object_array_add(grants, g);
        json_object_object_add(doc, "password_hash", json_object_new_string(hash));
        json_object_object_add(doc, "grants", grants);
        json_object_object_add(doc, "created", json_object_new_int64(now));
        r = st->ops->doc_put(st, "user", name, json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN),
                             now);
        if (r < 0)
                return r;
        if (ret_password)
                *ret_password = TAKE_PTR(generated);
        return 0;
}

static struct fail_entry *fail_find(struct mp_auth *a, const char *key, time_t now, bool create) {
        struct fail_entry *free_slot = NULL, *oldest = NULL;

        for (size_t i = 0; i < MAX_FAIL_KEYS; i++) {
                struct fail_entry *f = &a->fails[i];

                if (f->count && now - f->first >= MP_AUTH_WINDOW_SEC)
                        f->count = 0; /* the window passed */
                if (f->count && strcmp(f->key, key) == 0)
                        return f;
                if (!f->count && !free_slot)
                        free_slot = f;
                if (f->count && (!oldest || f->first < oldest->first))
                        oldest = f;
        }
        if (!create)
                return NULL;
        /* full: the oldest window makes room (an attacker filling the table
         * only frees others' old counts, never their own) */
        free_slot = free_slot ? free_slot : oldest;
        snprintf(free_slot->key, sizeof(free_slot->key), "%s", key);
        free_slot->first = now;
        free_slot->count = 0;
        return free_slot;
}

static unsigned locked_for(struct mp_auth *a, const char *key, time_t now) {
        struct fail_entry *f = fail_find(a, key, now, false);

        if (!f || f->count < MP_AUTH_MAX_FAILURES)
                return 0;
        return (unsigned)(f->first + MP_AUTH_WINDOW_SEC - now);
}

static void count_failure(struct mp_auth *a, const char *key, time_t now) {
        struct fail_entry *f = fail_find(a, key, now, true);

        f->count++;
}

static int session_new(struct mp_auth *a, const char *user, time_t now, char ret_session[MP_AUTH_SECRET_LEN],
                       char ret_csrf[MP_AUTH_SECRET_LEN]) {
        struct session *s;
        int r;

        if (a->n_sessions >= MAX_SESSIONS)
                return -EUSERS;
        s = calloc(1, sizeof(*s));
        if (!s || !(s->user = strdup(user))) {
                free(s);
                return -ENOMEM;
        }
        r = random_hex(ret_session);
        if (r >= 0)
                r = random_hex(s->csrf);
        if (r < 0) {
                session_free(s);
                return r;
        }
        sha256_hex(ret_session, s->id_hash);
        strscpy(ret_csrf, MP_AUTH_SECRET_LEN, s->csrf);
        s->created = s->last_used = now;
        s->next = a->sessions;
        a->sessions = s;
        a->n_sessions++;
        return 0;
}

int mp_auth_login(struct mp_auth *a, struct mp_store *st, const char *user, const char *password,
                  const char *address, time_t now, char ret_session[MP_AUTH_SECRET_LEN],
                  char ret_csrf[MP_AUTH_SECRET_LEN], unsigned *ret_retry_after) {
        _cleanup_(json_object_putp) json_object *doc = NULL;
        _cleanup_(freep) char *body = NULL;
        char ukey[160], akey[160];
        unsigned wait_u, wait_a;
        json_object *h;
        int r;

        snprintf(ukey, sizeof(ukey), "u:%s", user);
        snprintf(akey, sizeof(akey), "a:%s", address ? address : "");
        wait_u = locked_for(a, ukey, now);
        wait_a = locked_for(a, akey, now);
        if (wait_u || wait_a) {
                *ret_retry_after = wait_u > wait_a ? wait_u : wait_a;
                return -EBUSY;
        }
        r = st->ops->doc_get(st, "user", user, &body);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0)
                doc = json_tokener_parse(body);
        if (!doc || !json_object_object_get_ex(doc, "password_hash", &h)) {
                /* an unknown user costs one hash too: no timing tells which names exist */
                (void)mp_auth_password_verify(a->dummy_hash, password);
                h = NULL;
        }
        if (!h || mp_auth_password_verify(json_object_get_string(h), password) < 0) {
                count_failure(a, ukey, now);
                count_failure(a, akey, now);
                return -EACCES;
        }
        return session_new(a, user, now, ret_session, ret_csrf);
}

int mp_auth_session(struct mp_auth *a, const char *cookie, time_t now, const char **ret_user,
                    const char **ret_csrf) {
        char h[MP_AUTH_SECRET_LEN];

        sha256_hex(cookie, h);
        for (struct session **ps = &a->sessions; *ps;) {
                struct session *s = *ps;

                if (now - s->last_used >= MP_AUTH_IDLE_SEC || now - s->created >= MP_AUTH_MAX_AGE_SEC) {
                        *ps = s->next;
                        session_free(s);
                        a->n_sessions--;
                        continue;
                }
                if (strcmp(s->id_hash, h) == 0) {
                        s->last_used = now;
                        *ret_user = s->user;
                        *ret_csrf = s->csrf;
                        return 0;
                }
                ps = &s->next;
        }
        return -ENOENT;
}

static void drop_where(struct mp_auth *a, const char *id_hash, const char *user) {
        for (struct session **ps = &a->sessions; *ps;) {
                struct session *s = *ps;

                if ((id_hash && strcmp(s->id_hash, id_hash) == 0) || (user && strcmp(s->user, user) == 0)) {
                        *ps = s->next;
                        session_free(s);
                        a->n_sessions--;
                } else
                        ps = &s->next;
        }
}

int mp_auth_logout(struct mp_auth *a, const char *cookie) {
        char h[MP_AUTH_SECRET_LEN];
        size_t before = a->n_sessions;

        sha256_hex(cookie, h);
        drop_where(a, h, NULL);
        return a->n_sessions < before ? 0 : -ENOENT;
}

void mp_auth_logout_user(struct mp_auth *a, const char *user) {
        drop_where(a, NULL, user);
}

bool mp_auth_csrf_ok(const char *want, const char *got) {
        return got && strlen(got) == strlen(want) && CRYPTO_memcmp(want, got, strlen(want)) == 0;
}

int mp_auth_token_new(struct mp_store *st, const char *user, const char *label, int64_t ttl, time_t now,
                      char **ret_token, char ret_id[MP_AUTH_SECRET_LEN]) {
        _cleanup_(json_object_putp) json_object *doc = json_object_new_object();
        char secret[64], token[80], id[MP_AUTH_SECRET_LEN];
        int r;

        if (!doc)
                return -ENOMEM;
        r = random_b64url(32, secret, sizeof(secret));
        if (r < 0)
                return r;
        snprintf(token, sizeof(token), "tmpt_%s", secret);
        sha256_hex(token, id);
        json_object_object_add(doc, "user", json_object_new_string(user));
        json_object_object_add(doc, "label", json_object_new_string(label ? label : ""));
        json_object_object_add(doc, "created", json_object_new_int64(now));
        json_object_object_add(doc, "expires", json_object_new_int64(now + ttl));
        r = st->ops->doc_put(st, "token", id, json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN),
                             now);
        if (r < 0)
                return r;
        *ret_token = strdup(token);
        if (!*ret_token)
                return -ENOMEM;
        strscpy(ret_id, MP_AUTH_SECRET_LEN, id);
        return 0;
}

int mp_auth_token_check(struct mp_store *st, const char *token, time_t now, char **ret_user) {
        _cleanup_(json_object_putp) json_object *doc = NULL;
        _cleanup_(freep) char *body = NULL;
        char id[MP_AUTH_SECRET_LEN];
        json_object *user, *expires;
        int r;

        if (strncmp(token, "tmpt_", 5) != 0 || strlen(token) > 80)
                return -ENOENT;
        sha256_hex(token, id);
        r = st->ops->doc_get(st, "token", id, &body);
        if (r < 0)
                return r;
        doc = json_tokener_parse(body);
        if (!doc || !json_object_object_get_ex(doc, "user", &user) ||
            !json_object_object_get_ex(doc, "expires", &expires))
                return -EBADMSG;
        if (now >= json_object_get_int64(expires))
                return -EKEYEXPIRED;
        *ret_user = strdup(json_object_get_string(user));
        return *ret_user ? 0 : -ENOMEM;
}
