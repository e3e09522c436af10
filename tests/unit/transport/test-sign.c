/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "transport/frame.h"
#include "transport/sign.h"

static const char BODY[] = "<BgbResponseMessage TimeStamp=\"2020-01-21T15:43:43Z\"><PushID>8</PushID>"
                           "</BgbResponseMessage>";

struct fixture {
        struct tether_key *keys[3]; /* indexed by enum tether_key_kind */
        struct tether_key *other[3];
        char dir[64];
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        for (int k = 0; k < 3; k++) {
                if (tether_key_generate((enum tether_key_kind)k, &f->keys[k]) < 0 ||
                    tether_key_generate((enum tether_key_kind)k, &f->other[k]) < 0)
                        return -1;
        }
        snprintf(f->dir, sizeof(f->dir), "/tmp/test-sign.XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        for (int k = 0; k < 3; k++) {
                tether_key_free(f->keys[k]);
                tether_key_free(f->other[k]);
        }
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

static void test_sign_verify_all_kinds(void **state) {
        struct fixture *f = *state;
        const uint8_t *body = (const uint8_t *)BODY;
        size_t len = strlen(BODY);

        for (int k = 0; k < 3; k++) {
                struct tether_key *key = f->keys[k];
                uint8_t *sig = NULL, *bad = NULL;
                size_t sig_len = 0;

                assert_int_equal(tether_key_get_kind(key), k);
                assert_true(tether_key_has_private(key));
                assert_int_equal(tether_sign(key, TETHER_FRAME_RESPONSE, body, len, &sig, &sig_len), 0);
                assert_true(sig_len > 0 && sig_len <= TETHER_FRAME_MAX_SIG);
                if (k == TETHER_KEY_ED25519)
                        assert_int_equal(sig_len, 64);
                if (k == TETHER_KEY_RSA)
                        assert_int_equal(sig_len, 3072 / 8);
                if (k == TETHER_KEY_EC_P256)
                        assert_int_equal(sig[0], 0x30); /* DER SEQUENCE */

                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, sig, sig_len), 0);

                /* Wrong key of the same kind. */
                assert_int_equal(tether_verify(f->other[k], TETHER_FRAME_RESPONSE, body, len, sig, sig_len),
                                 -EBADMSG);
                /* Another kind of key altogether. */
                assert_int_equal(
                        tether_verify(f->keys[(k + 1) % 3], TETHER_FRAME_RESPONSE, body, len, sig, sig_len),
                        -EBADMSG);
                /* Another type byte. */
                assert_int_equal(tether_verify(key, TETHER_FRAME_SIGNIN, body, len, sig, sig_len), -EBADMSG);
                assert_int_equal(tether_verify(key, TETHER_SIG_TYPE_POLICY, body, len, sig, sig_len),
                                 -EBADMSG);
                /* Altered body: one byte flipped, one byte short. */
                {
                        uint8_t *altered = malloc(len);

                        assert_non_null(altered);
                        memcpy(altered, body, len);
                        altered[len / 2] ^= 0x01;
                        assert_int_equal(
                                tether_verify(key, TETHER_FRAME_RESPONSE, altered, len, sig, sig_len),
                                -EBADMSG);
                        assert_int_equal(
                                tether_verify(key, TETHER_FRAME_RESPONSE, body, len - 1, sig, sig_len),
                                -EBADMSG);
                        free(altered);
                }
                /* Truncated, flipped, empty and garbage signatures. */
                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, sig, sig_len - 1),
                                 -EBADMSG);
                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, sig, 0), -EBADMSG);
                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, NULL, 0), -EBADMSG);
                bad = malloc(sig_len);
                assert_non_null(bad);
                memcpy(bad, sig, sig_len);
                bad[sig_len - 1] ^= 0x80;
                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, bad, sig_len),
                                 -EBADMSG);
                memset(bad, 0x41, sig_len);
                assert_int_equal(tether_verify(key, TETHER_FRAME_RESPONSE, body, len, bad, sig_len),
                                 -EBADMSG);
                free(bad);

                /* Signing needs the private half. */
                {
                        char *pem = NULL;
                        struct tether_key *pub = NULL;
                        uint8_t *s2 = NULL;
                        size_t s2_len = 0;

                        assert_int_equal(tether_key_public_pem(key, &pem), 0);
                        assert_int_equal(tether_key_from_public_pem(pem, strlen(pem), &pub), 0);
                        assert_false(tether_key_has_private(pub));
                        assert_true(tether_key_equal(pub, key));
                        assert_int_equal(tether_verify(pub, TETHER_FRAME_RESPONSE, body, len, sig, sig_len),
                                         0);
                        assert_int_equal(tether_sign(pub, TETHER_FRAME_RESPONSE, body, len, &s2, &s2_len),
                                         -ENOKEY);
                        tether_key_free(pub);
                        free(pem);
                }
                free(sig);
        }
}

/* The RSA-PSS parameters are those of the contract: an independent verifier
 * with SHA-256, MGF1-SHA-256 and salt = 32 accepts our signature. */
static void test_rsa_pss_parameters(void **state) {
        struct fixture *f = *state;
        struct tether_key *key = f->keys[TETHER_KEY_RSA];
        uint8_t *sig = NULL, *input = NULL;
        size_t sig_len = 0, input_len = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;

        assert_int_equal(
                tether_sign(key, TETHER_FRAME_SIGNIN, (const uint8_t *)BODY, strlen(BODY), &sig, &sig_len),
                0);
        assert_int_equal(tether_signature_input(TETHER_FRAME_SIGNIN, (const uint8_t *)BODY, strlen(BODY),
                                                &input, &input_len),
                         0);
        assert_int_equal(input_len, 7 + 1 + strlen(BODY));
        assert_memory_equal(input, "TETHER1\x01", 8);
        assert_memory_equal(input + 8, BODY, strlen(BODY));

        assert_non_null(ctx);
        assert_int_equal(EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, tether_key_evp(key)), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()), 1);
        assert_int_equal(EVP_DigestVerify(ctx, sig, sig_len, input, input_len), 1);
        EVP_MD_CTX_free(ctx);
        free(sig);
        free(input);
}

static void test_rsa_1024_refused(void **state) {
        struct fixture *f = *state;
        EVP_PKEY *small = EVP_RSA_gen(1024);
        struct tether_key *key = NULL;
        char path[128];
        FILE *fp;
        uint8_t *der = NULL, *p;
        int n;

        assert_non_null(small);
        assert_int_equal(tether_key_from_evp(small, &key), -EKEYREJECTED);
        assert_null(key);

        /* Through a PEM file with safe permissions too. */
        snprintf(path, sizeof(path), "%s/rsa1024.pem", f->dir);
        fp = fopen(path, "w");
        assert_non_null(fp);
        assert_int_equal(fchmod(fileno(fp), 0600), 0);
        assert_int_equal(PEM_write_PrivateKey(fp, small, NULL, NULL, 0, NULL, NULL), 1);
        fclose(fp);
        assert_int_equal(tether_key_load_private(path, &key), -EKEYREJECTED);

        /* And as a public SPKI. */
        n = i2d_PUBKEY(small, NULL);
        assert_true(n > 0);
        der = malloc((size_t)n);
        assert_non_null(der);
        p = der;
        assert_int_equal(i2d_PUBKEY(small, &p), n);
        assert_int_equal(tether_key_from_spki_der(der, (size_t)n, &key), -EKEYREJECTED);
        free(der);

        /* Other algorithms and curves are refused as well. */
        {
                EVP_PKEY *p384 = EVP_EC_gen("P-384");
                EVP_PKEY *ed448 = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");

                assert_non_null(p384);
                assert_non_null(ed448);
                assert_int_equal(tether_key_from_evp(p384, &key), -EKEYREJECTED);
                assert_int_equal(tether_key_from_evp(ed448, &key), -EKEYREJECTED);
                EVP_PKEY_free(p384);
                EVP_PKEY_free(ed448);
        }
        EVP_PKEY_free(small);
}

static void test_pem_files(void **state) {
        struct fixture *f = *state;

        for (int k = 0; k < 3; k++) {
                struct tether_key *priv = NULL, *pub = NULL;
                char path[128], pubpath[128];
                struct stat st;
                uint8_t *sig = NULL;
                size_t sig_len = 0;

                snprintf(path, sizeof(path), "%s/key%d.pem", f->dir, k);
                snprintf(pubpath, sizeof(pubpath), "%s/pub%d.pem", f->dir, k);
                assert_int_equal(tether_key_save_private(f->keys[k], path), 0);
                assert_int_equal(stat(path, &st), 0);
                assert_int_equal(st.st_mode & 07777, 0600);

                assert_int_equal(tether_key_load_private(path, &priv), 0);
                assert_true(tether_key_has_private(priv));
                assert_true(tether_key_equal(priv, f->keys[k]));
                assert_false(tether_key_equal(priv, f->other[k]));
                assert_int_equal(tether_key_get_kind(priv), k);
                /* The loaded key signs what the original verifies. */
                assert_int_equal(tether_sign(priv, 3, (const uint8_t *)BODY, strlen(BODY), &sig, &sig_len),
                                 0);
                assert_int_equal(
                        tether_verify(f->keys[k], 3, (const uint8_t *)BODY, strlen(BODY), sig, sig_len), 0);
                free(sig);

                /* Overwriting is atomic and keeps 0600. */
                assert_int_equal(tether_key_save_private(f->other[k], path), 0);
                assert_int_equal(stat(path, &st), 0);
                assert_int_equal(st.st_mode & 07777, 0600);
                tether_key_free(priv);
                priv = NULL;
                assert_int_equal(tether_key_load_private(path, &priv), 0);
                assert_true(tether_key_equal(priv, f->other[k]));
                tether_key_free(priv);
                priv = NULL;

                /* Group- or world-readable private keys are refused. */
                assert_int_equal(chmod(path, 0640), 0);
                assert_int_equal(tether_key_load_private(path, &priv), -EPERM);
                assert_int_equal(chmod(path, 0604), 0);
                assert_int_equal(tether_key_load_private(path, &priv), -EPERM);
                assert_null(priv);

                assert_int_equal(tether_key_save_public(f->keys[k], pubpath), 0);
                assert_int_equal(stat(pubpath, &st), 0);
                assert_int_equal(st.st_mode & 07777, 0644);
                assert_int_equal(tether_key_load_public(pubpath, &pub), 0);
                assert_false(tether_key_has_private(pub));
                assert_true(tether_key_equal(pub, f->keys[k]));
                assert_int_equal(tether_key_save_private(pub, path), -ENOKEY);
                tether_key_free(pub);
        }
}

static void test_pem_errors(void **state) {
        struct fixture *f = *state;
        struct tether_key *key = NULL;
        char path[128];
        int fd;

        snprintf(path, sizeof(path), "%s/missing.pem", f->dir);
        assert_int_equal(tether_key_load_private(path, &key), -ENOENT);
        assert_int_equal(tether_key_load_public(path, &key), -ENOENT);

        snprintf(path, sizeof(path), "%s/garbage.pem", f->dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "not a key\n", 10), 10);
        close(fd);
        assert_int_equal(tether_key_load_private(path, &key), -EBADMSG);
        assert_int_equal(tether_key_load_public(path, &key), -EBADMSG);
        assert_int_equal(tether_key_from_public_pem(
                                 "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 56, &key),
                         -EBADMSG);

        /* Saving into a directory that does not exist fails cleanly. */
        snprintf(path, sizeof(path), "%s/nodir/key.pem", f->dir);
        assert_int_equal(tether_key_save_private(f->keys[0], path), -ENOENT);
        assert_null(key);
}

static void test_spki(void **state) {
        struct fixture *f = *state;

        for (int k = 0; k < 3; k++) {
                struct tether_key *back = NULL, *back64 = NULL;
                uint8_t *der = NULL, *der2 = NULL;
                size_t len = 0, len2 = 0;
                char *b64 = NULL, fp1[TETHER_FINGERPRINT_LEN], fp2[TETHER_FINGERPRINT_LEN],
                     fp3[TETHER_FINGERPRINT_LEN];

                assert_int_equal(tether_key_spki_der(f->keys[k], &der, &len), 0);
                assert_int_equal(der[0], 0x30);
                assert_int_equal(tether_key_from_spki_der(der, len, &back), 0);
                assert_true(tether_key_equal(back, f->keys[k]));
                assert_false(tether_key_has_private(back));
                assert_int_equal(tether_key_spki_der(back, &der2, &len2), 0);
                assert_int_equal(len, len2);
                assert_memory_equal(der, der2, len);

                /* Trailing bytes and truncation are refused. */
                {
                        uint8_t *longer = malloc(len + 1);
                        struct tether_key *x = NULL;

                        assert_non_null(longer);
                        memcpy(longer, der, len);
                        longer[len] = 0;
                        assert_int_equal(tether_key_from_spki_der(longer, len + 1, &x), -EBADMSG);
                        assert_int_equal(tether_key_from_spki_der(der, len - 1, &x), -EBADMSG);
                        assert_null(x);
                        free(longer);
                }

                assert_int_equal(tether_key_spki_base64(f->keys[k], &b64), 0);
                assert_null(strchr(b64, '\n'));
                {
                        struct tether_key *x = NULL;

                        assert_int_equal(tether_key_from_spki_base64("not base64!", &x), -EBADMSG);
                        assert_int_equal(tether_key_from_spki_base64("Zm9vYmFy", &x), -EBADMSG);
                        assert_null(x);
                }
                assert_int_equal(tether_key_from_spki_base64(b64, &back64), 0);
                assert_true(tether_key_equal(back64, f->keys[k]));

                /* Fingerprint: 64 lowercase hex, stable, equal for the same key. */
                assert_int_equal(tether_key_fingerprint(f->keys[k], fp1), 0);
                assert_int_equal(tether_key_fingerprint(f->keys[k], fp2), 0);
                assert_int_equal(tether_key_fingerprint(back64, fp3), 0);
                assert_int_equal(strlen(fp1), 64);
                assert_int_equal(strspn(fp1, "0123456789abcdef"), 64);
                assert_string_equal(fp1, fp2);
                assert_string_equal(fp1, fp3);
                assert_int_equal(tether_key_fingerprint(f->other[k], fp2), 0);
                assert_string_not_equal(fp1, fp2);

                /* The fingerprint is the SHA-256 of the DER SPKI. */
                {
                        unsigned char md[32];
                        unsigned md_len = 0;
                        char hex[65];

                        assert_int_equal(EVP_Digest(der, len, md, &md_len, EVP_sha256(), NULL), 1);
                        for (unsigned i = 0; i < md_len; i++)
                                snprintf(hex + 2 * i, 3, "%02x", md[i]);
                        assert_string_equal(hex, fp1);
                }

                tether_key_free(back);
                tether_key_free(back64);
                free(der);
                free(der2);
                free(b64);
        }
}

static void test_base64(void **state) {
        static const struct {
                const char *plain, *b64;
        } vectors[] = {
                {"", ""},
                {"f", "Zg=="},
                {"fo", "Zm8="},
                {"foo", "Zm9v"},
                {"foob", "Zm9vYg=="},
                {"fooba", "Zm9vYmE="},
                {"foobar", "Zm9vYmFy"},
        };
        static const char *const bad[] = {
                "Zg=",      "Zg",       "Z===", "Zm9v\n", " Zm9v", "Zm 9v",
                "Zm9v====", "Zg==Zg==", "Zm=v", "Zm9*",   "====",
        };

        for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
                char *enc = NULL;
                uint8_t *dec = NULL;
                size_t len = 0;
                size_t plen = strlen(vectors[i].plain);

                assert_int_equal(tether_base64_encode((const uint8_t *)vectors[i].plain, plen, &enc), 0);
                assert_string_equal(enc, vectors[i].b64);
                assert_int_equal(tether_base64_decode(vectors[i].b64, &dec, &len), 0);
                assert_int_equal(len, plen);
                assert_memory_equal(dec, vectors[i].plain, plen);
                free(enc);
                free(dec);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint8_t *dec = NULL;
                size_t len = 0;

                if (tether_base64_decode(bad[i], &dec, &len) != -EBADMSG)
                        fail_msg("accepted base64 '%s'", bad[i]);
        }
}

static void test_self_signed_cert(void **state) {
        struct fixture *f = *state;
        static const char *const alt[] = {"mp.example.test", "localhost", "127.0.0.1", "::1", NULL};

        for (int k = 0; k < 3; k++) {
                char *pem = NULL;
                BIO *bio;
                X509 *x;
                EVP_PKEY *pub;
                GENERAL_NAMES *gens;
                int dns = 0, ip = 0;

                assert_int_equal(tether_cert_self_signed(f->keys[k], "device-1", alt, 30, &pem), 0);
                bio = BIO_new_mem_buf(pem, -1);
                assert_non_null(bio);
                x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
                assert_non_null(x);

                pub = X509_get0_pubkey(x);
                assert_non_null(pub);
                assert_int_equal(EVP_PKEY_eq(pub, tether_key_evp(f->keys[k])), 1);
                assert_int_equal(X509_verify(x, pub), 1);
                assert_int_equal(X509_check_host(x, "mp.example.test", 0, 0, NULL), 1);
                assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
                assert_int_equal(X509_check_host(x, "other.example.test", 0, 0, NULL), 0);
                assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
                assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
                assert_int_equal(X509_check_ip_asc(x, "127.0.0.2", 0), 0);

                gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
                assert_non_null(gens);
                for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
                        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

                        if (g->type == GEN_DNS)
                                dns++;
                        else if (g->type == GEN_IPADD)
                                ip++;
                }
                assert_int_equal(dns, 2);
                assert_int_equal(ip, 2);
                GENERAL_NAMES_free(gens);

                /* Valid now. */
                assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
                assert_true(X509_cmp_current_time(X509_get0_notAfter(x)) > 0);

                X509_free(x);
                BIO_free(bio);
                free(pem);
        }

        /* Without alt names; with a bad one; without a private key. */
        {
                static const char *const bad_alt[] = {"bad name,DNS:evil", NULL};
                char *pem = NULL, *pubpem = NULL;
                struct tether_key *pub = NULL;

                assert_int_equal(tether_cert_self_signed(f->keys[0], "x", NULL, 1, &pem), 0);
                free(pem);
                pem = NULL;
                assert_int_equal(tether_cert_self_signed(f->keys[0], "x", bad_alt, 1, &pem), -EINVAL);
                assert_int_equal(tether_key_public_pem(f->keys[0], &pubpem), 0);
                assert_int_equal(tether_key_from_public_pem(pubpem, strlen(pubpem), &pub), 0);
                assert_int_equal(tether_cert_self_signed(pub, "x", NULL, 1, &pem), -ENOKEY);
                assert_null(pem);
                tether_key_free(pub);
                free(pubpem);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sign_verify_all_kinds),
                cmocka_unit_test(test_rsa_pss_parameters),
                cmocka_unit_test(test_rsa_1024_refused),
                cmocka_unit_test(test_pem_files),
                cmocka_unit_test(test_pem_errors),
                cmocka_unit_test(test_spki),
                cmocka_unit_test(test_base64),
                cmocka_unit_test(test_self_signed_cert),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
