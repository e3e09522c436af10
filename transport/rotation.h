/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Key rotation, PROTOCOL-v1 version 1.1 sections 7.2 and 7.3.
 *
 * Site key chain: serial 1 is the root (the key an agent was configured
 * with or pinned), and each endorsement signs its successor:
 *   "TETHER1" || 0x4B || serial (4 bytes BE) || NotBefore (20 ASCII) || DER
 * Device key rollover: the old key signs
 *   "TETHER1" || 0x44 || ClientID (36 ASCII) || new key's DER
 *
 * struct tether_site_chain holds the root and the links verified from it,
 * oldest first. Used by the agent's channel process (trust.c), its root
 * half (schedd.c, from its own configured key) and the MP (its own chain).
 * The text form (one link a line) is the file format and what the channel
 * process hands to the root half; it is verified again wherever it is read.
 *
 * Ownership: a chain owns its keys and strings; tether_site_chain_free()
 * releases them. Functions that return text return memory the caller owns.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "transport/guid.h"
#include "transport/message.h"

struct tether_key;

#define TETHER_SIG_TYPE_ENDORSEMENT 0x4Bu
#define TETHER_SIG_TYPE_ROLLOVER 0x44u
/* The contract's overlap: the previous site key is accepted until 7 days
 * after a SIGNIN_CONFIRM signed by its successor first verified. */
#define TETHER_SITE_KEY_OVERLAP_SECONDS (7 * 24 * 3600)
/* An endorsement whose NotBefore is further ahead than this is refused
 * ("far in the future"): a key that would wait that long is a mistake. */
#define TETHER_NOT_BEFORE_MAX_AHEAD (90 * 24 * 3600)

/* Endorsement signature: sig_b64 owned by the caller. */
int tether_endorsement_sign(const struct tether_key *signer, uint32_t serial,
                            const char not_before[TETHER_TIMESTAMP_LEN], const uint8_t *der, size_t der_len,
                            char **ret_sig_b64);
/* 0 when sig_b64 is signer's endorsement of der; -EBADMSG when not. */
int tether_endorsement_verify(const struct tether_key *signer, uint32_t serial,
                              const char not_before[TETHER_TIMESTAMP_LEN], const uint8_t *der,
                              size_t der_len, const char *sig_b64);

/* Rollover proof by old_key for new_key under client_id; sig owned by the
 * caller. verify: 0, or -EBADMSG when it does not verify. */
int tether_rollover_sign(const struct tether_key *old_key, const char *client_id,
                         const struct tether_key *new_key, char **ret_sig_b64);
int tether_rollover_verify(const struct tether_key *old_key, const char *client_id,
                           const struct tether_key *new_key, const char *sig_b64);

struct tether_site_chain;

/* A chain holding only root (serial 1); root is copied. */
int tether_site_chain_new(const struct tether_key *root, struct tether_site_chain **ret);
struct tether_site_chain *tether_site_chain_free(struct tether_site_chain *c); /* accepts NULL */
/* A deep copy. */
int tether_site_chain_copy(const struct tether_site_chain *c, struct tether_site_chain **ret);

/* Number of keys, root included (>= 1). Index 0 is the root. */
size_t tether_site_chain_len(const struct tether_site_chain *c);
/* Link i: its serial (i + 1), key (borrowed), NotBefore (0 for the root),
 * and when a SIGNIN_CONFIRM signed by it first verified (0: not yet). */
const struct tether_key *tether_site_chain_key(const struct tether_site_chain *c, size_t i);
time_t tether_site_chain_not_before(const struct tether_site_chain *c, size_t i);
time_t tether_site_chain_first_confirm(const struct tether_site_chain *c, size_t i);
/* Records the first confirm by key i at now; true when that changed it. */
bool tether_site_chain_mark_confirm(struct tether_site_chain *c, size_t i, time_t now);

/*
 * Walks endorsements (oldest first) from the chain's newest key: ones it
 * already holds are skipped; the next must have the next serial, verify
 * with the newest key before its own key is parsed, and not start more
 * than TETHER_NOT_BEFORE_MAX_AHEAD after now. The first refusal ends the
 * walk: why (256 bytes) names the reason, the links accepted before it
 * stay. Returns how many links were added (>= 0), or -ENOMEM.
 */
int tether_site_chain_extend(struct tether_site_chain *c, const struct tether_endorsement *e, size_t n,
                             time_t now, char why[256]);

/* The index of the newest key whose NotBefore has come (the signer). */
size_t tether_site_chain_current(const struct tether_site_chain *c, time_t now);
/* Whether key i is accepted at now: the current key, or an older one
 * within overlap seconds of the current key's first confirm (or while it
 * has none yet). */
bool tether_site_chain_accepts(const struct tether_site_chain *c, size_t i, time_t now, time_t overlap);
/* A key that verifies signatures by every accepted key (the current one
 * first), for the verify calls that take one key. Owned by the caller. */
int tether_site_chain_verifier(const struct tether_site_chain *c, time_t now, time_t overlap,
                               struct tether_key **ret);

/* The endorsements of the chain (for SIGNIN_CONFIRM): an array of n
 * borrowed-string structs the caller frees (not the strings). */
int tether_site_chain_endorsements(const struct tether_site_chain *c, struct tether_endorsement **ret,
                                   size_t *ret_n);

/* Appends a link the caller made (the MP's rotation): signs the
 * endorsement of new_key with signer, which must be the newest key's
 * private half. */
int tether_site_chain_append(struct tether_site_chain *c, const struct tether_key *signer,
                             const struct tether_key *new_key, time_t not_before);

/* Text form: "<serial> <NotBefore> <key b64> <signature b64> <first confirm>"
 * per link, root excluded. */
int tether_site_chain_format(const struct tether_site_chain *c, char **ret, size_t *ret_len);
/* Parses text and extends the chain with it (verifying every link);
 * first-confirm times are taken when with_times. -EBADMSG (why says) when a
 * line is malformed or a link is refused. */
int tether_site_chain_parse(struct tether_site_chain *c, const char *text, size_t len, bool with_times,
                            time_t now, char why[256]);
/* The text form written atomically and durably (mode 0644), and read back
 * (-ENOENT when missing). */
int tether_site_chain_save(const struct tether_site_chain *c, const char *path);
int tether_site_chain_load(struct tether_site_chain *c, const char *path, time_t now, char why[256]);
