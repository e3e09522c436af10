/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/trust.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/config.h"
#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "transport/rotation.h"
#include "transport/sign.h"

struct site_trust {
        struct tether_key *root;         /* serial 1: configured, or pinned */
        struct tether_site_chain *chain; /* from root; NULL while root is unknown */
        /* The key that verifies now (current + keys in their overlap), and
         * what it was built for, so that it is rebuilt when that changes. */
        struct tether_key *verifier;
        size_t verifier_cur, verifier_n;
        char *fingerprint; /* configured, lowercase hex, or NULL */
        bool tofu;
        char *pin_path;
        char *chain_path;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_key *, tether_key_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_site_chain *, tether_site_chain_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_msg *, tether_msg_free);

struct site_trust *site_trust_free(struct site_trust *t) {
        if (!t)
                return NULL;
        tether_key_free(t->root);
        tether_site_chain_free(t->chain);
        tether_key_free(t->verifier);
        free(t->fingerprint);
        free(t->pin_path);
        free(t->chain_path);
        free(t);
        return NULL;
}

static void refresh_verifier(struct site_trust *t, time_t now) {
        size_t cur, n = 0;
        struct tether_key *v = NULL;

        if (!t->chain)
                return;
        cur = tether_site_chain_current(t->chain, now);
        for (size_t i = 0; i < tether_site_chain_len(t->chain); i++)
                n += tether_site_chain_accepts(t->chain, i, now, TETHER_SITE_KEY_OVERLAP_SECONDS);
        if (t->verifier && cur == t->verifier_cur && n == t->verifier_n)
                return;
        /* On failure (no memory) the previous verifier stays. */
        if (tether_site_chain_verifier(t->chain, now, TETHER_SITE_KEY_OVERLAP_SECONDS, &v) < 0)
                return;
        if (t->verifier && t->verifier_n > n)
                log_notice("Site key: the previous key's overlap is over; only serial %zu is trusted now",
                           cur + 1);
        tether_key_free(t->verifier);
        t->verifier = v;
        t->verifier_cur = cur;
        t->verifier_n = n;
}

const struct tether_key *site_trust_key(struct site_trust *t) {
        refresh_verifier(t, time(NULL));
        return t->verifier;
}

const struct tether_key *site_trust_root(const struct site_trust *t) {
        return t->root;
}

const struct tether_site_chain *site_trust_chain(const struct site_trust *t) {
        return t->chain;
}

int site_trust_chain_text(const struct site_trust *t, char **ret, size_t *ret_len) {
        *ret = NULL;
        *ret_len = 0;
        if (!t->chain || tether_site_chain_len(t->chain) < 2)
                return 0;
        return tether_site_chain_format(t->chain, ret, ret_len);
}

static bool fingerprint_matches(const struct tether_key *key, const char *want) {
        char fp[TETHER_FINGERPRINT_LEN];

        return tether_key_fingerprint(key, fp) >= 0 && strcmp(fp, want) == 0;
}

/* Adopts root and the chain stored for it (each link verified again). */
static int adopt_root(struct site_trust *t, struct tether_key *root) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *chain = NULL;
        char why[256] = "";
        int r;

        r = tether_site_chain_new(root, &chain);
        if (r < 0)
                return r;
        r = tether_site_chain_load(chain, t->chain_path, time(NULL), why);
        if (r == -EBADMSG)
                log_warning("Site key chain '%s': %s; keeping the %zu keys before it", t->chain_path, why,
                            tether_site_chain_len(chain));
        else if (r < 0 && r != -ENOENT)
                return r;
        tether_key_free(t->root);
        t->root = root;
        tether_site_chain_free(t->chain);
        t->chain = TAKE_PTR(chain);
        t->verifier = tether_key_free(t->verifier);
        return 0;
}

int site_trust_new(const struct tether_config *config, const char *pin_dir, struct site_trust **ret,
                   char err[256]) {
        struct tether_key *key = NULL;
        struct site_trust *t;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->tofu = config->trust_on_first_use;
        t->pin_path = path_join(pin_dir, "site.pub");
        t->chain_path = path_join(pin_dir, "site-chain");
        if (!t->pin_path || !t->chain_path ||
            (config->site_key_fingerprint && !(t->fingerprint = strdup(config->site_key_fingerprint)))) {
                site_trust_free(t);
                return -ENOMEM;
        }

        if (config->site_key) {
                r = tether_key_load_public(config->site_key, &key);
                if (r < 0) {
                        snprintf(err, 256, "cannot load the site key '%s': %s", config->site_key,
                                 strerror(-r));
                        site_trust_free(t);
                        return r;
                }
                if (t->fingerprint && !fingerprint_matches(key, t->fingerprint)) {
                        snprintf(err, 256, "the site key '%s' does not match site_key_fingerprint",
                                 config->site_key);
                        tether_key_free(key);
                        site_trust_free(t);
                        return -EKEYREJECTED;
                }
        } else {
                /* A key learned earlier (fingerprint or TOFU mode). */
                r = tether_key_load_public(t->pin_path, &key);
                if (r >= 0 && t->fingerprint && !fingerprint_matches(key, t->fingerprint)) {
                        /* The configured fingerprint changed since: learn again. */
                        key = tether_key_free(key);
                } else if (r < 0 && r != -ENOENT) {
                        snprintf(err, 256, "cannot load the pinned site key '%s': %s", t->pin_path,
                                 strerror(-r));
                        site_trust_free(t);
                        return r;
                }
                if (!key && !t->fingerprint && !t->tofu) {
                        snprintf(err, 256, "no site key configured");
                        site_trust_free(t);
                        return -ENOKEY;
                }
        }
        if (key) {
                r = adopt_root(t, key);
                if (r < 0) {
                        tether_key_free(key);
                        snprintf(err, 256, "cannot read the site key chain '%s': %s", t->chain_path,
                                 strerror(-r));
                        site_trust_free(t);
                        return r;
                }
        }
        *ret = t;
        return 0;
}

/* Persists chain, atomically, before anything uses it (section 7.2). */
static int persist_chain(struct site_trust *t, const struct tether_site_chain *chain) {
        /* Test hook for the crash test (tests/integration/agent): dies
         * between receiving a chain and persisting it. */
        if (getenv("TETHER_TEST_KILL_BEFORE_CHAIN_SAVE"))
                raise(SIGKILL);
        return tether_site_chain_save(chain, t->chain_path);
}

/* Walks the endorsements of a confirm into a copy of the chain, persists
 * it when it grew, and adopts it. Returns how many keys were added. */
static int take_chain(struct site_trust *t, const struct tether_signin_confirm *m, time_t now) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *next = NULL;
        char why[256] = "";
        int added, r;

        if (m->n_endorsements == 0)
                return 0;
        r = tether_site_chain_copy(t->chain, &next);
        if (r < 0)
                return r;
        added = tether_site_chain_extend(next, m->endorsements, m->n_endorsements, now, why);
        if (added < 0)
                return added;
        if (why[0])
                log_warning("Site key chain from the MP refused: %s; trust stays with serials 1 to %zu", why,
                            tether_site_chain_len(next));
        if (added == 0)
                return 0;
        r = persist_chain(t, next);
        if (r < 0) {
                /* Never used before it is on disk; the next confirm brings
                 * it again. */
                log_error_errno(r, "Cannot persist the site key chain to '%s'; not using it: %m",
                                t->chain_path);
                return 0;
        }
        for (size_t i = tether_site_chain_len(t->chain); i < tether_site_chain_len(next); i++) {
                char fp[TETHER_FINGERPRINT_LEN] = "", nb[TETHER_TIMESTAMP_LEN] = "";
                (void)tether_key_fingerprint(tether_site_chain_key(next, i), fp);
                (void)tether_timestamp_format(tether_site_chain_not_before(next, i), nb);
                log_notice("Site key serial %zu (%s) accepted through the chain; it signs from %s", i + 1,
                           fp, nb);
        }
        tether_site_chain_free(t->chain);
        t->chain = TAKE_PTR(next);
        t->verifier = tether_key_free(t->verifier);
        return added;
}

/* The first confirm signed by the current key starts its predecessors'
 * overlap; recorded durably. */
static void note_confirm(struct site_trust *t, const struct tether_frame *frame, time_t now) {
        size_t cur = tether_site_chain_current(t->chain, now);
        struct tether_diag diag = {0};

        if (cur == 0 || tether_site_chain_first_confirm(t->chain, cur) != 0)
                return;
        if (tether_msg_verify(frame, tether_site_chain_key(t->chain, cur), &diag) < 0)
                return;
        tether_site_chain_mark_confirm(t->chain, cur, now);
        if (tether_site_chain_save(t->chain, t->chain_path) < 0)
                log_warning("Cannot record the first confirm by site key serial %zu in '%s'", cur + 1,
                            t->chain_path);
        else
                log_notice("First SIGNIN_CONFIRM signed by site key serial %zu: the previous keys are "
                           "trusted for %d more days",
                           cur + 1, TETHER_SITE_KEY_OVERLAP_SECONDS / 86400);
}

static int fail_why(int r, const struct tether_diag *diag, char why[256]) {
        snprintf(why, 256, "%s", diag->text[0] ? diag->text : strerror(-r));
        return r;
}

/* The root is unknown (fingerprint or TOFU mode): it comes from the
 * unverified body's SitePublicKey and must match the fingerprint; the
 * confirm must then verify with it or a key it endorses. */
static int learn_root(struct site_trust *t, const struct tether_signin_confirm *m, struct tether_key **ret,
                      char why[256]) {
        _cleanup_(tether_key_freep) struct tether_key *candidate = NULL;

        if (!m->site_public_key) {
                snprintf(why, 256, "no SitePublicKey in SIGNIN_CONFIRM, and no site key known to verify it");
                return -EKEYREJECTED;
        }
        if (tether_key_from_spki_base64(m->site_public_key, &candidate) < 0) {
                snprintf(why, 256, "SitePublicKey is not a usable public key");
                return -EBADMSG;
        }
        if (t->fingerprint) {
                if (!fingerprint_matches(candidate, t->fingerprint)) {
                        char fp[TETHER_FINGERPRINT_LEN] = "";
                        (void)tether_key_fingerprint(candidate, fp);
                        snprintf(why, 256, "SitePublicKey fingerprint %s is not the configured %s", fp,
                                 t->fingerprint);
                        return -EKEYREJECTED;
                }
        } else if (!t->tofu) {
                snprintf(why, 256, "no site key configured");
                return -EKEYREJECTED;
        }
        *ret = TAKE_PTR(candidate);
        return 0;
}

/* The root is unknown: it comes from SitePublicKey, the chain from the
 * body, and the confirm must verify with them before anything is pinned. */
static int open_learning(struct site_trust *t, const struct tether_frame *frame,
                         const struct tether_signin_confirm *m, time_t now, struct tether_msg **ret,
                         char why[256]) {
        _cleanup_(tether_key_freep) struct tether_key *root = NULL, *verifier = NULL;
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *chain = NULL;
        struct tether_diag diag = {0};
        char refused[256] = "";
        int r;

        r = learn_root(t, m, &root, why);
        if (r < 0)
                return r;
        r = tether_site_chain_new(root, &chain);
        if (r >= 0)
                r = tether_site_chain_extend(chain, m->endorsements, m->n_endorsements, now, refused);
        if (r >= 0)
                r = tether_site_chain_verifier(chain, now, TETHER_SITE_KEY_OVERLAP_SECONDS, &verifier);
        if (r < 0)
                return r;
        if (refused[0])
                log_warning("Site key chain from the MP refused: %s; trust stays with serials 1 to %zu",
                            refused, tether_site_chain_len(chain));
        r = tether_msg_open(frame, verifier, ret, &diag);
        if (r < 0)
                return fail_why(r, &diag, why);
        r = tether_key_save_public(root, t->pin_path);
        if (r >= 0 && tether_site_chain_len(chain) > 1)
                r = persist_chain(t, chain);
        if (r < 0) {
                *ret = tether_msg_free(*ret);
                snprintf(why, 256, "cannot pin the site key to '%s': %s", t->pin_path, strerror(-r));
                return r;
        }
        tether_key_free(t->root);
        t->root = TAKE_PTR(root);
        tether_site_chain_free(t->chain);
        t->chain = TAKE_PTR(chain);
        t->verifier = tether_key_free(t->verifier);
        return 0;
}

/* The confirm did not verify with what is trusted: maybe it is signed by a
 * key the chain in it endorses. Only the chain is read from the unverified
 * body, and every link of it is verified from a trusted key. */
static int open_with_chain(struct site_trust *t, const struct tether_frame *frame, time_t now,
                           struct tether_msg **ret, bool *ret_learned, char why[256]) {
        _cleanup_(tether_msg_freep) struct tether_msg *unverified = NULL;
        struct tether_diag diag = {0};
        int r;

        r = tether_msg_parse(TETHER_FRAME_SIGNIN_CONFIRM, frame->body, frame->body_len, &unverified, &diag);
        if (r < 0)
                return fail_why(r, &diag, why);
        if (!t->root) {
                r = open_learning(t, frame, &unverified->signin_confirm, now, ret, why);
                if (r >= 0)
                        *ret_learned = true;
                return r;
        }
        r = take_chain(t, &unverified->signin_confirm, now);
        if (r < 0) {
                snprintf(why, 256, "cannot take the site key chain: %s", strerror(-r));
                return r;
        }
        if (r > 0)
                *ret_learned = true;
        refresh_verifier(t, now);
        if (!t->verifier)
                return -ENOMEM;
        r = tether_msg_open(frame, t->verifier, ret, &diag);
        if (r < 0)
                return fail_why(r, &diag, why);
        return 0;
}

int site_trust_open_confirm(struct site_trust *t, const struct tether_frame *frame, struct tether_msg **ret,
                            bool *ret_learned, char why[256]) {
        struct tether_msg *msg = NULL;
        struct tether_diag diag = {0};
        time_t now = time(NULL);
        int r;

        *ret_learned = false;
        refresh_verifier(t, now);
        if (t->verifier) {
                r = tether_msg_open(frame, t->verifier, &msg, &diag);
                if (r >= 0) {
                        r = take_chain(t, &msg->signin_confirm, now);
                        if (r < 0) {
                                tether_msg_free(msg);
                                snprintf(why, 256, "cannot take the site key chain: %s", strerror(-r));
                                return r;
                        }
                        *ret_learned = r > 0;
                        note_confirm(t, frame, now);
                        *ret = msg;
                        return 0;
                }
                if (diag.kind != TETHER_DIAG_BAD_SIGNATURE)
                        return fail_why(r, &diag, why);
        }
        r = open_with_chain(t, frame, now, &msg, ret_learned, why);
        if (r < 0)
                return r;
        note_confirm(t, frame, now);
        *ret = msg;
        return 0;
}
