/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/trust.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "common/fsutil.h"
#include "common/cleanup.h"
#include "transport/sign.h"

struct site_trust {
        struct tether_key *key;
        char *fingerprint; /* configured, lowercase hex, or NULL */
        bool tofu;
        char *pin_path;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_key *, tether_key_free);

struct site_trust *site_trust_free(struct site_trust *t) {
        if (!t)
                return NULL;
        tether_key_free(t->key);
        free(t->fingerprint);
        free(t->pin_path);
        free(t);
        return NULL;
}

const struct tether_key *site_trust_key(const struct site_trust *t) {
        return t->key;
}

static bool fingerprint_matches(const struct tether_key *key, const char *want) {
        char fp[TETHER_FINGERPRINT_LEN];

        return tether_key_fingerprint(key, fp) >= 0 && strcmp(fp, want) == 0;
}

int site_trust_new(const struct tether_config *config, const char *pin_dir, struct site_trust **ret,
                   char err[256]) {
        struct site_trust *t;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->tofu = config->trust_on_first_use;
        t->pin_path = path_join(pin_dir, "site.pub");
        if (!t->pin_path ||
            (config->site_key_fingerprint && !(t->fingerprint = strdup(config->site_key_fingerprint)))) {
                site_trust_free(t);
                return -ENOMEM;
        }

        if (config->site_key) {
                r = tether_key_load_public(config->site_key, &t->key);
                if (r < 0) {
                        snprintf(err, 256, "cannot load the site key '%s': %s", config->site_key,
                                 strerror(-r));
                        site_trust_free(t);
                        return r;
                }
                if (t->fingerprint && !fingerprint_matches(t->key, t->fingerprint)) {
                        snprintf(err, 256, "the site key '%s' does not match site_key_fingerprint",
                                 config->site_key);
                        site_trust_free(t);
                        return -EKEYREJECTED;
                }
                *ret = t;
                return 0;
        }

        /* A key learned earlier (fingerprint or TOFU mode). */
        r = tether_key_load_public(t->pin_path, &t->key);
        if (r >= 0 && t->fingerprint && !fingerprint_matches(t->key, t->fingerprint)) {
                /* The configured fingerprint changed since: learn again. */
                t->key = tether_key_free(t->key);
        } else if (r < 0 && r != -ENOENT) {
                snprintf(err, 256, "cannot load the pinned site key '%s': %s", t->pin_path, strerror(-r));
                site_trust_free(t);
                return r;
        }
        if (!t->key && !t->fingerprint && !t->tofu) {
                snprintf(err, 256, "no site key configured");
                site_trust_free(t);
                return -ENOKEY;
        }
        *ret = t;
        return 0;
}

int site_trust_open_confirm(struct site_trust *t, const struct tether_frame *frame, struct tether_msg **ret,
                            bool *ret_learned, char why[256]) {
        _cleanup_(tether_key_freep) struct tether_key *candidate = NULL;
        struct tether_msg *unverified = NULL, *msg = NULL;
        struct tether_diag diag = {0};
        int r;

        *ret_learned = false;
        if (t->key) {
                r = tether_msg_open(frame, t->key, &msg, &diag);
                if (r < 0) {
                        snprintf(why, 256, "%s", diag.text[0] ? diag.text : strerror(-r));
                        return r;
                }
                *ret = msg;
                return 0;
        }

        /* Only to find the key that the signature must then verify with. */
        r = tether_msg_parse(TETHER_FRAME_SIGNIN_CONFIRM, frame->body, frame->body_len, &unverified, &diag);
        if (r < 0) {
                snprintf(why, 256, "%s", diag.text[0] ? diag.text : strerror(-r));
                return r;
        }
        if (!unverified->signin_confirm.site_public_key) {
                tether_msg_free(unverified);
                snprintf(why, 256, "no SitePublicKey in SIGNIN_CONFIRM, and no site key known to verify it");
                return -EKEYREJECTED;
        }
        r = tether_key_from_spki_base64(unverified->signin_confirm.site_public_key, &candidate);
        tether_msg_free(unverified);
        if (r < 0) {
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
        r = tether_msg_open(frame, candidate, &msg, &diag);
        if (r < 0) {
                snprintf(why, 256, "%s", diag.text[0] ? diag.text : strerror(-r));
                return r;
        }
        r = tether_key_save_public(candidate, t->pin_path);
        if (r < 0) {
                tether_msg_free(msg);
                snprintf(why, 256, "cannot pin the site key to '%s': %s", t->pin_path, strerror(-r));
                return r;
        }
        t->key = TAKE_PTR(candidate);
        *ret_learned = true;
        *ret = msg;
        return 0;
}
