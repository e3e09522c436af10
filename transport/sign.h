/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Keys, signatures and certificates (PROTOCOL-v1 sections 2 and 4), with
 * OpenSSL 3 EVP. The algorithm follows from the key:
 *   ECDSA P-256 + SHA-256, DER signature (default for new keys);
 *   Ed25519, raw 64 bytes;
 *   RSA-PSS + SHA-256 (salt length = digest length), RSA >= 2048 bits.
 *
 * Signature input: "TETHER1" || type byte || body.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* The "type byte" of a policy document's detached signature (section 4). */
#define TETHER_SIG_TYPE_POLICY 0x50u

enum tether_key_kind {
        TETHER_KEY_EC_P256 = 0,
        TETHER_KEY_ED25519,
        TETHER_KEY_RSA, /* generated at 3072 bits */
};

/* An opaque public or private key. Owned by the caller of the function that
 * made it; release with tether_key_free(). */
struct tether_key;

struct tether_key *tether_key_free(struct tether_key *key); /* accepts NULL */

int tether_key_generate(enum tether_key_kind kind, struct tether_key **ret);

/* PEM files. Private keys are written 0600 through a temporary file, fsync
 * and rename, so a crash never leaves half a key. Loading refuses an RSA key
 * under 2048 bits and any other algorithm than the three above (-EKEYREJECTED),
 * and a private key file readable by group or others (-EPERM). Errors:
 * -ENOENT, -EACCES, -EBADMSG (not a key), -EIO. */
int tether_key_load_private(const char *path, struct tether_key **ret);
int tether_key_save_private(const struct tether_key *key, const char *path);
int tether_key_load_public(const char *path, struct tether_key **ret);
int tether_key_save_public(const struct tether_key *key, const char *path); /* 0644 */

/* PEM in memory. ret is a NUL-terminated string owned by the caller. */
int tether_key_public_pem(const struct tether_key *key, char **ret);
int tether_key_from_public_pem(const char *pem, size_t len, struct tether_key **ret);

/* DER SubjectPublicKeyInfo, raw and base64 (no line breaks). */
int tether_key_spki_der(const struct tether_key *key, uint8_t **ret, size_t *ret_len);
int tether_key_spki_base64(const struct tether_key *key, char **ret);
int tether_key_from_spki_der(const uint8_t *der, size_t len, struct tether_key **ret);
int tether_key_from_spki_base64(const char *b64, struct tether_key **ret);

/* SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex, 64 chars + NUL. */
#define TETHER_FINGERPRINT_LEN 65
int tether_key_fingerprint(const struct tether_key *key, char ret[TETHER_FINGERPRINT_LEN]);

/* True when a and b are the same public key. */
bool tether_key_equal(const struct tether_key *a, const struct tether_key *b);
bool tether_key_has_private(const struct tether_key *key);
enum tether_key_kind tether_key_get_kind(const struct tether_key *key);

/* The underlying EVP_PKEY, borrowed (for TLS contexts). */
EVP_PKEY *tether_key_evp(const struct tether_key *key);
/* Wraps an EVP_PKEY, taking a new reference. */
int tether_key_from_evp(EVP_PKEY *pkey, struct tether_key **ret);

/* Signs "TETHER1" || type || body. ret is owned by the caller; its length is
 * at most TETHER_FRAME_MAX_SIG. */
int tether_sign(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t body_len,
                uint8_t **ret_sig, size_t *ret_sig_len);

/* Returns 0 when the signature verifies, -EBADMSG when it does not (wrong
 * key, wrong type byte, altered body, malformed signature), or another
 * negative errno on an internal failure. */
int tether_verify(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t body_len,
                  const uint8_t *sig, size_t sig_len);

/* A key for tether_verify() that accepts a signature by any of keys[0..n)
 * (tried in order), for a site key and its predecessors during a rotation
 * (transport/rotation.h). It cannot sign. Owned by the caller. */
int tether_key_verifier_of(const struct tether_key *const *keys, size_t n, struct tether_key **ret);

/* Writes the exact signature input into a new buffer (for vectors and the
 * openssl CLI). */
int tether_signature_input(uint8_t type, const uint8_t *body, size_t body_len, uint8_t **ret,
                           size_t *ret_len);

/* A self-signed X.509 certificate for TLS, in PEM, valid from now-1h for
 * days days, subject CN=common_name, with subjectAltName entries from
 * alt_names (NULL-terminated; each a DNS name or an IPv4/IPv6 literal; the
 * list may be NULL). ret is owned by the caller. */
int tether_cert_self_signed(const struct tether_key *key, const char *common_name,
                            const char *const *alt_names, unsigned days, char **ret_pem);

/* Base64 helpers (standard alphabet, with padding, no line breaks). */
int tether_base64_encode(const uint8_t *data, size_t len, char **ret);
int tether_base64_decode(const char *text, uint8_t **ret, size_t *ret_len);
