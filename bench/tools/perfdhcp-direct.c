/* perfdhcp-direct: LD_PRELOAD shim that makes Kea's perfdhcp (DHCPv4) behave
 * like clients on the server's own segment instead of like a relay agent.
 *
 * perfdhcp -4 always acts as a relay: it binds its socket to its own address,
 * puts that address in giaddr and sets hops = 1, so servers answer it by
 * unicast. With this shim preloaded:
 *
 *   - bind() of an IPv4 UDP socket to port DIRECT_PORT (default 68) binds to
 *     INADDR_ANY instead, with SO_BROADCAST, so broadcast replies
 *     (255.255.255.255:68) reach the socket;
 *   - every BOOTREQUEST sent to port 67 leaves with giaddr = 0, hops = 0 and
 *     the BOOTP broadcast flag set, i.e. as a client without an address.
 *
 * Run perfdhcp with -L 68 -B and server 255.255.255.255. Everything else
 * (MACs, xids, option 50/54 in the REQUEST, timing, statistics) is perfdhcp's.
 * The rewrite costs a few byte stores per packet, on the client side only.
 *
 *   cc -O2 -shared -fPIC -o perfdhcp-direct.so perfdhcp-direct.c -ldl
 *   LD_PRELOAD=./perfdhcp-direct.so perfdhcp -L 68 -B ... 255.255.255.255
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define BOOTP_MIN 240 /* fixed header (236) + magic cookie */

static int direct_port(void) {
  const char *p = getenv("DIRECT_PORT");
  return p ? atoi(p) : 68;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_bind)(int, const struct sockaddr *, socklen_t);
  if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
  if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
    if (ntohs(in->sin_port) == direct_port()) {
      struct sockaddr_in any = *in;
      int one = 1;
      any.sin_addr.s_addr = htonl(INADDR_ANY);
      setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
      return real_bind(fd, (struct sockaddr *)&any, sizeof any);
    }
  }
  return real_bind(fd, addr, len);
}

/* A client-side BOOTREQUEST to port 67? Rewrite it in buf. */
static void make_direct(const struct sockaddr *to, uint8_t *buf, size_t n) {
  if (!to || to->sa_family != AF_INET) return;
  if (ntohs(((const struct sockaddr_in *)to)->sin_port) != 67) return;
  if (n < BOOTP_MIN || buf[0] != 1) return;
  if (memcmp(buf + 236, "\x63\x82\x53\x63", 4) != 0) return;
  buf[3] = 0;             /* hops */
  buf[10] |= 0x80;        /* flags: broadcast */
  memset(buf + 24, 0, 4); /* giaddr */
}

ssize_t sendto(int fd, const void *data, size_t n, int flags, const struct sockaddr *to,
               socklen_t tolen) {
  static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *,
                                socklen_t);
  if (!real_sendto) real_sendto = dlsym(RTLD_NEXT, "sendto");
  uint8_t copy[1500];
  if (to && n >= BOOTP_MIN && n <= sizeof copy) {
    memcpy(copy, data, n);
    make_direct(to, copy, n);
    return real_sendto(fd, copy, n, flags, to, tolen);
  }
  return real_sendto(fd, data, n, flags, to, tolen);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
  if (!real_sendmsg) real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
  uint8_t copy[1500];
  size_t n = 0;
  if (!msg || !msg->msg_name) return real_sendmsg(fd, msg, flags);
  for (size_t i = 0; i < msg->msg_iovlen; i++) {
    size_t l = msg->msg_iov[i].iov_len;
    if (n + l > sizeof copy) return real_sendmsg(fd, msg, flags);
    memcpy(copy + n, msg->msg_iov[i].iov_base, l);
    n += l;
  }
  make_direct(msg->msg_name, copy, n);
  struct iovec iov = {copy, n};
  struct msghdr m = *msg;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  return real_sendmsg(fd, &m, flags);
}
