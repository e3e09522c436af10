/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder until the implementation lands; intentionally empty. */
typedef int tether_placeholder_sign;
