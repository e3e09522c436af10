/* SPDX-License-Identifier: Apache-2.0 */
#include "mp/dupguard.h"

#include <errno.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

struct tracked {
        char *client_id;
        uint64_t flagged_until; /* 0: not flagged */
        unsigned n;             /* live replacements in times[], oldest first */
        uint64_t times[];       /* threshold slots */
};

struct mp_dupguard {
        struct mp_dupguard_config cfg;
        void *root; /* tsearch tree of struct tracked */
        size_t n;
};

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const struct tracked *)a)->client_id, ((const struct tracked *)b)->client_id);
}

static void entry_free(void *p) {
        struct tracked *e = p;

        free(e->client_id);
        free(e);
}

int mp_dupguard_new(const struct mp_dupguard_config *cfg, struct mp_dupguard **ret) {
        static const struct mp_dupguard_config defaults = {
                .threshold = MP_DUPGUARD_THRESHOLD,
                .window_usec = MP_DUPGUARD_WINDOW_USEC,
                .hold_usec = MP_DUPGUARD_HOLD_USEC,
        };
        struct mp_dupguard *g;

        if (!cfg)
                cfg = &defaults;
        if (cfg->threshold < 2 || cfg->threshold > 1000 || cfg->window_usec == 0)
                return -EINVAL;
        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->cfg = *cfg;
        *ret = g;
        return 0;
}

struct mp_dupguard *mp_dupguard_free(struct mp_dupguard *g) {
        if (!g)
                return NULL;
        tdestroy(g->root, entry_free);
        free(g);
        return NULL;
}

static struct tracked *find(const struct mp_dupguard *g, const char *client_id) {
        struct tracked key = {.client_id = (char *)client_id};
        void *node = tfind(&key, &g->root, entry_cmp);

        return node ? *(struct tracked **)node : NULL;
}

/* Drops the replacements that left the window. */
static void forget_old(const struct mp_dupguard *g, struct tracked *e, uint64_t now) {
        unsigned keep = 0;

        for (unsigned i = 0; i < e->n; i++)
                if (now - e->times[i] < g->cfg.window_usec)
                        e->times[keep++] = e->times[i];
        e->n = keep;
}

static bool flagged(const struct tracked *e, uint64_t now) {
        return e->flagged_until != 0 && now < e->flagged_until;
}

int mp_dupguard_replacement(struct mp_dupguard *g, const char *client_id, bool old_live, uint64_t now_usec,
                            enum mp_dupguard_verdict *ret, unsigned *ret_count) {
        struct tracked *e;

        *ret = MP_DUPGUARD_REPLACE;
        if (ret_count)
                *ret_count = 0;
        /* The old connection is dead (or as good as): whoever held it is
         * gone, so this is a plain reconnection, whatever came before. */
        if (!old_live)
                return 0;

        e = find(g, client_id);
        if (!e) {
                e = calloc(1, sizeof(*e) + g->cfg.threshold * sizeof(e->times[0]));
                if (!e)
                        return -ENOMEM;
                e->client_id = strdup(client_id);
                if (!e->client_id || !tsearch(e, &g->root, entry_cmp)) {
                        entry_free(e);
                        return -ENOMEM;
                }
                g->n++;
        }
        forget_old(g, e, now_usec);
        if (flagged(e, now_usec)) {
                e->flagged_until = now_usec + g->cfg.hold_usec;
                *ret = MP_DUPGUARD_CONFLICT;
                return 0;
        }
        e->flagged_until = 0;
        e->times[e->n++] = now_usec; /* n < threshold here: it is reset below on reaching it */
        if (ret_count)
                *ret_count = e->n;
        if (e->n >= g->cfg.threshold) {
                e->flagged_until = now_usec + g->cfg.hold_usec;
                e->n = 0;
                *ret = MP_DUPGUARD_CONFLICT;
        }
        return 0;
}

bool mp_dupguard_flagged(const struct mp_dupguard *g, const char *client_id, uint64_t now_usec) {
        const struct tracked *e = find(g, client_id);

        return e && flagged(e, now_usec);
}

struct expire_ctx {
        const struct mp_dupguard *g;
        uint64_t now;
        struct tracked **drop;
        size_t n_drop, cap;
};

static void expire_visit(const void *node, VISIT which, void *closure) {
        struct expire_ctx *x = closure;
        struct tracked *e = *(struct tracked *const *)node;

        if (which != postorder && which != leaf)
                return;
        forget_old(x->g, e, x->now);
        if (e->n > 0 || flagged(e, x->now) || x->n_drop >= x->cap)
                return;
        x->drop[x->n_drop++] = e;
}

void mp_dupguard_expire(struct mp_dupguard *g, uint64_t now_usec) {
        struct expire_ctx x = {.g = g, .now = now_usec};

        if (g->n == 0)
                return;
        /* Collect first, delete after: the tree must not change under twalk.
         * On allocation failure nothing is dropped now; the next sweep tries
         * again. */
        x.drop = calloc(g->n, sizeof(*x.drop));
        if (!x.drop)
                return;
        x.cap = g->n;
        twalk_r(g->root, expire_visit, &x);
        for (size_t i = 0; i < x.n_drop; i++) {
                if (tdelete(x.drop[i], &g->root, entry_cmp))
                        g->n--;
                entry_free(x.drop[i]);
        }
        free(x.drop);
}

size_t mp_dupguard_size(const struct mp_dupguard *g) {
        return g->n;
}
