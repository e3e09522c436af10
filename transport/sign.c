/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/strutil.h"
#include "transport/frame.h"
#include "transport/sign.h"

#define SIG_PREFIX "TETHER1"
#define SIG_PREFIX_LEN (sizeof(SIG_PREFIX) - 1)
#define RSA_MIN_BITS 2048
/* An RSA signature is as long as the modulus: above 8192 bits it would not
 * fit in a frame's 1024-byte signature field. */
#define RSA_MAX_BITS 8192
#define RSA_GENERATE_BITS 3072
/* A PEM key or certificate file is a few KiB at most. */
#define PEM_FILE_MAX (64 * 1024)

struct tether_key {
        EVP_PKEY *pkey;
        enum tether_key_kind kind;
        bool has_private;
        /* A verifier made by tether_key_verifier_of(): the next key to try
         * when this one does not verify (owned), or NULL. */
        struct tether_key *also;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAMES *, GENERAL_NAMES_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAME *, GENERAL_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_EXTENSION *, X509_EXTENSION_free);

struct tether_key *tether_key_free(struct tether_key *key) {
        if (!key)
                return NULL;
        tether_key_free(key->also);
        EVP_PKEY_free(key->pkey);
        free(key);
        return NULL;
}

/* Decides the protocol's algorithm for a key, or refuses it. */
static int key_kind_of(EVP_PKEY *pkey, enum tether_key_kind *ret) {
        switch (EVP_PKEY_get_base_id(pkey)) {
        case EVP_PKEY_EC: {
                char group[64];
                size_t group_len = 0;

                if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &group_len) != 1)
                        return -EKEYREJECTED;
                if (OBJ_sn2nid(group) != NID_X9_62_prime256v1 &&
                    EC_curve_nist2nid(group) != NID_X9_62_prime256v1)
                        return -EKEYREJECTED;
                *ret = TETHER_KEY_EC_P256;
                return 0;
        }
        case EVP_PKEY_ED25519:
                *ret = TETHER_KEY_ED25519;
                return 0;
        case EVP_PKEY_RSA: {
                int bits = EVP_PKEY_get_bits(pkey);

                if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)
                        return -EKEYREJECTED;
                *ret = TETHER_KEY_RSA;
                return 0;
        }
        default:
                /* Includes RSA-PSS-restricted keys, Ed448, X25519, DSA. */
                return -EKEYREJECTED;
        }
}

/* Whether pkey holds its private half (keys from providers have no flag). */
static bool key_detect_private(EVP_PKEY *pkey, enum tether_key_kind kind) {
        BIGNUM *bn = NULL;
        size_t len = 0;
        bool found = false;

        switch (kind) {
        case TETHER_KEY_EC_P256:
                found = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn) == 1;
                break;
        case TETHER_KEY_RSA:
                found = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &bn) == 1;
                break;
        case TETHER_KEY_ED25519:
                found = EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, NULL, 0, &len) ==
                                1 &&
                        len > 0;
                break;
        }
        BN_clear_free(bn);
        ERR_clear_error();
        return found;
}

/* Takes ownership of pkey in all cases. */
static int key_wrap(EVP_PKEY *pkey, bool want_private, struct tether_key **ret) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *owned = pkey;
        struct tether_key *key;
        enum tether_key_kind kind;
        int r;

        r = key_kind_of(owned, &kind);
        if (r < 0)
                return r;
        key = calloc(1, sizeof(*key));
        if (!key)
                return -ENOMEM;
        key->pkey = TAKE_PTR(owned);
        key->kind = kind;
        key->has_private = want_private && key_detect_private(key->pkey, kind);
        *ret = key;
        return 0;
}

int tether_key_generate(enum tether_key_kind kind, struct tether_key **ret) {
        EVP_PKEY *pkey = NULL;

        if (!ret)
                return -EINVAL;
        switch (kind) {
        case TETHER_KEY_EC_P256:
                pkey = EVP_EC_gen("P-256");
                break;
        case TETHER_KEY_ED25519:
                pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
                break;
        case TETHER_KEY_RSA:
                pkey = EVP_RSA_gen(RSA_GENERATE_BITS);
                break;
        default:
                return -EINVAL;
        }
        if (!pkey) {
                ERR_clear_error();
                return -EIO;
        }
        return key_wrap(pkey, true, ret);
}

bool tether_key_has_private(const struct tether_key *key) {
        return key && key->has_private;
}

enum tether_key_kind tether_key_get_kind(const struct tether_key *key) {
        return key->kind;
}

EVP_PKEY *tether_key_evp(const struct tether_key *key) {
        return key ? key->pkey : NULL;
}

int tether_key_from_evp(EVP_PKEY *pkey, struct tether_key **ret) {
        if (!pkey || !ret)
                return -EINVAL;
        if (EVP_PKEY_up_ref(pkey) != 1)
                return -EIO;
        return key_wrap(pkey, true, ret);
}

bool tether_key_equal(const struct tether_key *a, const struct tether_key *b) {
        int r;

        if (!a || !b)
                return false;
        r = EVP_PKEY_eq(a->pkey, b->pkey);
        ERR_clear_error();
        return r == 1;
}

/* ---- files ---- */

/* Never prompts for a passphrase: an encrypted key is simply not loadable. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata) {
        return -1;
}

int tether_key_load_private(const char *path, struct tether_key **ret) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) uint8_t *pem = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        EVP_PKEY *pkey;
        struct stat st;
        size_t len = 0;
        int r;

        if (!path || !ret)
                return -EINVAL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        /* Like ssh: a private key anyone else may read is already lost. */
        if (st.st_mode & (S_IRWXG | S_IRWXO))
                return -EPERM;

        r = read_fd_capped(fd, PEM_FILE_MAX, &pem, &len);
        if (r < 0)
                return r == -EFBIG ? -EBADMSG : r;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;
        pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        explicit_bzero(pem, len);
        if (!pkey) {
                ERR_clear_error();
                return -EBADMSG;
        }
        return key_wrap(pkey, true, ret);
}

int tether_key_load_public(const char *path, struct tether_key **ret) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) uint8_t *pem = NULL;
        size_t len = 0;
        int r;

        if (!path || !ret)
                return -EINVAL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = read_fd_capped(fd, PEM_FILE_MAX, &pem, &len);
        if (r < 0)
                return r == -EFBIG ? -EBADMSG : r;
        return tether_key_from_public_pem((const char *)pem, len, ret);
}

/* Copies a memory BIO's contents into a NUL-terminated malloc'ed string. */
static int bio_to_string(BIO *bio, char **ret, size_t *ret_len) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        char *s;

        if (n < 0 || (n > 0 && !data))
                return -EIO;
        s = malloc((size_t)n + 1);
        if (!s)
                return -ENOMEM;
        if (n > 0)
                memcpy(s, data, (size_t)n);
        s[n] = '\0';
        *ret = s;
        if (ret_len)
                *ret_len = (size_t)n;
        return 0;
}

int tether_key_save_private(const struct tether_key *key, const char *path) {
        _cleanup_(BIO_freep) BIO *bio = NULL;
        char *data = NULL;
        long n;
        int r;

        if (!key || !path)
                return -EINVAL;
        if (!key->has_private)
                return -ENOKEY;
        bio = BIO_new(BIO_s_secmem());
        if (!bio)
                return -ENOMEM;
        if (PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL) != 1) {
                ERR_clear_error();
                return -EIO;
        }
        n = BIO_get_mem_data(bio, &data);
        if (n <= 0 || !data)
                return -EIO;
        r = write_file_atomic(path, data, (size_t)n, 0600, FSUTIL_DURABLE);
        return r;
}

int tether_key_public_pem(const struct tether_key *key, char **ret) {
        _cleanup_(BIO_freep) BIO *bio = NULL;

        if (!key || !ret)
                return -EINVAL;
        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        if (PEM_write_bio_PUBKEY(bio, key->pkey) != 1) {
                ERR_clear_error();
                return -EIO;
        }
        return bio_to_string(bio, ret, NULL);
}

int tether_key_save_public(const struct tether_key *key, const char *path) {
        _cleanup_(freep) char *pem = NULL;
        int r;

        if (!key || !path)
                return -EINVAL;
        r = tether_key_public_pem(key, &pem);
        if (r < 0)
                return r;
        return write_file_atomic(path, pem, strlen(pem), 0644, FSUTIL_DURABLE);
}

int tether_key_from_public_pem(const char *pem, size_t len, struct tether_key **ret) {
        _cleanup_(BIO_freep) BIO *bio = NULL;
        EVP_PKEY *pkey;

        if (!pem || !ret)
                return -EINVAL;
        if (len > PEM_FILE_MAX)
                return -EBADMSG;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
        if (!pkey) {
                ERR_clear_error();
                return -EBADMSG;
        }
        return key_wrap(pkey, false, ret);
}

/* ---- SubjectPublicKeyInfo ---- */

int tether_key_spki_der(const struct tether_key *key, uint8_t **ret, size_t *ret_len) {
        uint8_t *buf, *p;
        int n;

        if (!key || !ret || !ret_len)
                return -EINVAL;
        n = i2d_PUBKEY(key->pkey, NULL);
        if (n <= 0) {
                ERR_clear_error();
                return -EIO;
        }
        buf = malloc((size_t)n);
        if (!buf)
                return -ENOMEM;
        p = buf;
        if (i2d_PUBKEY(key->pkey, &p) != n) {
                ERR_clear_error();
                free(buf);
                return -EIO;
        }
        *ret = buf;
        *ret_len = (size_t)n;
        return 0;
}

int tether_key_spki_base64(const struct tether_key *key, char **ret) {
        _cleanup_(freep) uint8_t *der = NULL;
        size_t len = 0;
        int r;

        if (!key || !ret)
                return -EINVAL;
        r = tether_key_spki_der(key, &der, &len);
        if (r < 0)
                return r;
        return tether_base64_encode(der, len, ret);
}

int tether_key_from_spki_der(const uint8_t *der, size_t len, struct tether_key **ret) {
        const unsigned char *p = der;
        EVP_PKEY *pkey;

        if (!der || !ret)
                return -EINVAL;
        if (len == 0 || len > PEM_FILE_MAX)
                return -EBADMSG;
        pkey = d2i_PUBKEY(NULL, &p, (long)len);
        if (!pkey) {
                ERR_clear_error();
                return -EBADMSG;
        }
        /* Exactly one structure: trailing bytes mean it is not what it claims. */
        if (p != der + len) {
                EVP_PKEY_free(pkey);
                return -EBADMSG;
        }
        return key_wrap(pkey, false, ret);
}

int tether_key_from_spki_base64(const char *b64, struct tether_key **ret) {
        _cleanup_(freep) uint8_t *der = NULL;
        size_t len = 0;
        int r;

        if (!b64 || !ret)
                return -EINVAL;
        r = tether_base64_decode(b64, &der, &len);
        if (r < 0)
                return r;
        return tether_key_from_spki_der(der, len, ret);
}

int tether_key_fingerprint(const struct tether_key *key, char ret[TETHER_FINGERPRINT_LEN]) {
        _cleanup_(freep) uint8_t *der = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        size_t len = 0;
        int r;

        if (!key || !ret)
                return -EINVAL;
        r = tether_key_spki_der(key, &der, &len);
        if (r < 0)
                return r;
        if (EVP_Digest(der, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
                ERR_clear_error();
                return -EIO;
        }
        hex_encode(md, md_len, ret);
        return 0;
}

/* ---- signatures ---- */

int tether_signature_input(uint8_t type, const uint8_t *body, size_t body_len, uint8_t **ret,
                           size_t *ret_len) {
        uint8_t *buf;

        if (!ret || !ret_len || (body_len > 0 && !body))
                return -EINVAL;
        if (body_len > SIZE_MAX - SIG_PREFIX_LEN - 1)
                return -EMSGSIZE;
        buf = malloc(SIG_PREFIX_LEN + 1 + body_len);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, SIG_PREFIX, SIG_PREFIX_LEN);
        buf[SIG_PREFIX_LEN] = type;
        if (body_len > 0)
                memcpy(buf + SIG_PREFIX_LEN + 1, body, body_len);
        *ret = buf;
        *ret_len = SIG_PREFIX_LEN + 1 + body_len;
        return 0;
}

/* Sets up ctx for signing or verifying with the key's algorithm. */
static int digest_init(EVP_MD_CTX *ctx, const struct tether_key *key, bool sign) {
        EVP_PKEY_CTX *pctx = NULL;
        /* Ed25519 hashes internally (PureEdDSA): it takes no digest. */
        const char *md = key->kind == TETHER_KEY_ED25519 ? NULL : "SHA256";
        int ok;

        if (sign)
                ok = EVP_DigestSignInit_ex(ctx, &pctx, md, NULL, NULL, key->pkey, NULL);
        else
                ok = EVP_DigestVerifyInit_ex(ctx, &pctx, md, NULL, NULL, key->pkey, NULL);
        if (ok != 1)
                return -EIO;
        if (key->kind == TETHER_KEY_RSA) {
                if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
                    EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) != 1)
                        return -EIO;
        }
        return 0;
}

int tether_sign(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t body_len,
                uint8_t **ret_sig, size_t *ret_sig_len) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_(freep) uint8_t *input = NULL;
        _cleanup_(freep) uint8_t *sig = NULL;
        size_t input_len = 0, sig_len = 0;
        int r;

        if (!key || !ret_sig || !ret_sig_len || (body_len > 0 && !body))
                return -EINVAL;
        if (!key->has_private)
                return -ENOKEY;
        r = tether_signature_input(type, body, body_len, &input, &input_len);
        if (r < 0)
                return r;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        r = digest_init(ctx, key, true);
        if (r < 0)
                goto fail;
        /* One-shot: Ed25519 supports no streaming. */
        if (EVP_DigestSign(ctx, NULL, &sig_len, input, input_len) != 1) {
                r = -EIO;
                goto fail;
        }
        if (sig_len == 0 || sig_len > TETHER_FRAME_MAX_SIG) {
                r = -EMSGSIZE;
                goto fail;
        }
        sig = malloc(sig_len);
        if (!sig)
                return -ENOMEM;
        if (EVP_DigestSign(ctx, sig, &sig_len, input, input_len) != 1) {
                r = -EIO;
                goto fail;
        }
        *ret_sig = TAKE_PTR(sig);
        *ret_sig_len = sig_len;
        return 0;
fail:
        ERR_clear_error();
        return r;
}

int tether_verify(const struct tether_key *key, uint8_t type, const uint8_t *body, size_t body_len,
                  const uint8_t *sig, size_t sig_len) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_(freep) uint8_t *input = NULL;
        size_t input_len = 0;
        int r;

        if (!key || (body_len > 0 && !body))
                return -EINVAL;
        if (!sig || sig_len == 0 || sig_len > TETHER_FRAME_MAX_SIG)
                return -EBADMSG;
        r = tether_signature_input(type, body, body_len, &input, &input_len);
        if (r < 0)
                return r;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        r = digest_init(ctx, key, false);
        if (r < 0) {
                ERR_clear_error();
                return r;
        }
        /* 0 is a mismatch, a negative value a malformed signature: to the
         * caller both mean the same, the frame is not authentic. */
        r = EVP_DigestVerify(ctx, sig, sig_len, input, input_len);
        ERR_clear_error();
        if (r != 1 && key->also)
                return tether_verify(key->also, type, body, body_len, sig, sig_len);
        return r == 1 ? 0 : -EBADMSG;
}

int tether_key_verifier_of(const struct tether_key *const *keys, size_t n, struct tether_key **ret) {
        struct tether_key *head = NULL, **tail = &head;

        if (!ret || n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int r = tether_key_from_evp(keys[i]->pkey, tail);
                if (r < 0) {
                        tether_key_free(head);
                        return r;
                }
                /* Public halves only: a verifier never signs. */
                (*tail)->has_private = false;
                tail = &(*tail)->also;
        }
        *ret = head;
        return 0;
}

/* ---- certificates ---- */

/* One subjectAltName entry: an IP literal when it parses as one, else a DNS
 * name, which must be plain host name characters. */
static int alt_name_new(const char *name, GENERAL_NAME **ret) {
        _cleanup_(GENERAL_NAME_freep) GENERAL_NAME *gen = NULL;
        ASN1_OCTET_STRING *ip;
        ASN1_IA5STRING *dns;

        if (!name || !*name || strlen(name) > 253)
                return -EINVAL;
        gen = GENERAL_NAME_new();
        if (!gen)
                return -ENOMEM;
        ip = a2i_IPADDRESS(name);
        if (ip) {
                GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
                *ret = TAKE_PTR(gen);
                return 0;
        }
        ERR_clear_error();
        for (const char *c = name; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '-' || *c == '.' || *c == '*' || *c == '_'))
                        return -EINVAL;
        dns = ASN1_IA5STRING_new();
        if (!dns)
                return -ENOMEM;
        if (ASN1_STRING_set(dns, name, (int)strlen(name)) != 1) {
                ASN1_IA5STRING_free(dns);
                return -ENOMEM;
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
        *ret = TAKE_PTR(gen);
        return 0;
}

static int cert_add_ext(X509 *x, int nid, const char *value) {
        _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *ext = NULL;
        X509V3_CTX v3;

        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
        if (!ext || X509_add_ext(x, ext, -1) != 1)
                return -EIO;
        return 0;
}

int tether_cert_self_signed(const struct tether_key *key, const char *common_name,
                            const char *const *alt_names, unsigned days, char **ret_pem) {
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_(BN_freep) BIGNUM *serial = NULL;
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *gens = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        X509_NAME *name;
        const EVP_MD *md;
        int r = -EIO;

        if (!key || !common_name || !*common_name || !ret_pem || days == 0 || days > 36500)
                return -EINVAL;
        if (!key->has_private)
                return -ENOKEY;

        x = X509_new();
        serial = BN_new();
        if (!x || !serial)
                return -ENOMEM;
        if (X509_set_version(x, X509_VERSION_3) != 1)
                goto fail;
        /* 127 random bits: positive, unique enough never to collide. */
        if (BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
            !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)))
                goto fail;
        /* An hour of slack for clocks that lag behind ours. */
        if (!X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
            !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
                goto fail;

        name = X509_get_subject_name(x);
        if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name, -1, -1,
                                       0) != 1 ||
            X509_set_issuer_name(x, name) != 1)
                goto fail;
        if (X509_set_pubkey(x, key->pkey) != 1)
                goto fail;

        if (cert_add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            cert_add_ext(x, NID_subject_key_identifier, "hash") < 0)
                goto fail;

        if (alt_names && alt_names[0]) {
                gens = GENERAL_NAMES_new();
                if (!gens)
                        return -ENOMEM;
                for (size_t i = 0; alt_names[i]; i++) {
                        GENERAL_NAME *gen = NULL;

                        r = alt_name_new(alt_names[i], &gen);
                        if (r < 0)
                                return r;
                        if (sk_GENERAL_NAME_push(gens, gen) <= 0) {
                                GENERAL_NAME_free(gen);
                                return -ENOMEM;
                        }
                }
                r = -EIO;
                if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
                        goto fail;
        }

        /* Ed25519 signs the certificate without a separate digest. */
        md = key->kind == TETHER_KEY_ED25519 ? NULL : EVP_sha256();
        if (X509_sign(x, key->pkey, md) <= 0)
                goto fail;

        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        if (PEM_write_bio_X509(bio, x) != 1)
                goto fail;
        return bio_to_string(bio, ret_pem, NULL);
fail:
        ERR_clear_error();
        return r;
}

/* ---- base64 ---- */

int tether_base64_encode(const uint8_t *data, size_t len, char **ret) {
        char *out;
        size_t out_len;
        int n;

        if (!ret || (len > 0 && !data))
                return -EINVAL;
        if (len > (size_t)INT_MAX / 4 * 3 - 3)
                return -EMSGSIZE;
        out_len = (len + 2) / 3 * 4;
        out = malloc(out_len + 1);
        if (!out)
                return -ENOMEM;
        n = len > 0 ? EVP_EncodeBlock((unsigned char *)out, data, (int)len) : 0;
        if (n < 0 || (size_t)n != out_len) {
                free(out);
                return -EIO;
        }
        out[out_len] = '\0';
        *ret = out;
        return 0;
}

static bool base64_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
               c == '/';
}

int tether_base64_decode(const char *text, uint8_t **ret, size_t *ret_len) {
        size_t len, pad = 0;
        uint8_t *out;
        int n;

        if (!text || !ret || !ret_len)
                return -EINVAL;
        len = strlen(text);
        if (len % 4 != 0)
                return -EBADMSG;
        if (len > (size_t)INT_MAX)
                return -EMSGSIZE;
        if (len >= 1 && text[len - 1] == '=')
                pad++;
        if (len >= 2 && text[len - 2] == '=')
                pad++;
        /* EVP_DecodeBlock skips blanks and treats padding loosely: check the
         * exact form first, every character of the alphabet, '=' only at the end. */
        for (size_t i = 0; i < len - pad; i++)
                if (!base64_char(text[i]))
                        return -EBADMSG;

        out = malloc(len / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        n = len > 0 ? EVP_DecodeBlock(out, (const unsigned char *)text, (int)len) : 0;
        /* EVP_DecodeBlock counts the padding as zero bytes. */
        if (n < 0 || (size_t)n != len / 4 * 3) {
                free(out);
                ERR_clear_error();
                return -EBADMSG;
        }
        *ret = out;
        *ret_len = (size_t)n - pad;
        return 0;
}
