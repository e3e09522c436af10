/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the seed corpus of fuzz-privsep: one packet of each type, built
 * with agent/privsep.c's own builders, behind the side byte the target
 * reads first. Run by hand: make-privsep-seeds tests/fuzz/corpus/privsep
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/privsep.h"

static void put(const char *dir, const char *name, int side, int r, uint8_t *buf, size_t len) {
        char path[4096];
        FILE *f;

        if (r < 0) {
                fprintf(stderr, "%s: cannot build\n", name);
                exit(1);
        }
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "wb");
        if (!f || fputc(side, f) == EOF || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
                perror(path);
                exit(1);
        }
        free(buf);
}

int main(int argc, char **argv) {
        static const uint8_t body[] = "<Policy Version=\"1\" Scope=\"machine\"/>", sig[] = {1, 2, 3, 4};
        static const uint8_t der[] = {0x30, 0x59, 0x30, 0x13};
        const char *guid = "11111111-1111-4111-8111-111111111111";
        uint8_t *b = NULL;
        size_t n = 0;

        if (argc != 2) {
                fprintf(stderr, "usage: make-privsep-seeds DIR\n");
                return 2;
        }
        put(argv[1], "run", 0, priv_build_run(1, guid, "", &b, &n), b, n);
        put(argv[1], "run-local-param", 0, priv_build_run(2, "", "alice", &b, &n), b, n);
        put(argv[1], "policy-new", 0, priv_build_policy("", 0, 0, body, sizeof(body) - 1, sig, 4, &b, &n), b,
            n);
        put(argv[1], "policy-none", 0, priv_build_policy("alice", 2, 0, NULL, 0, NULL, 0, &b, &n), b, n);
        put(argv[1], "policy-error", 0, priv_build_policy("", 3, -111, NULL, 0, NULL, 0, &b, &n), b, n);
        put(argv[1], "site-key", 0, priv_build_site_key(der, sizeof(der), &b, &n), b, n);
        put(argv[1], "status", 0, priv_build_status("signed in", &b, &n), b, n);
        put(argv[1], "ping", 0, priv_build_ping(PRIV_PING, 7, &b, &n), b, n);
        put(argv[1], "done", 1, priv_build_done(3, guid, 1, "hello: compliant", &b, &n), b, n);
        put(argv[1], "policy-request", 1, priv_build_policy_request("alice", &b, &n), b, n);
        put(argv[1], "pong", 1, priv_build_ping(PRIV_PONG, 7, &b, &n), b, n);
        return 0;
}
