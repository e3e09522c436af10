/* SPDX-License-Identifier: Apache-2.0 */
typedef int tether_placeholder_backoff;
