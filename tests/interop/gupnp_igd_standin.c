/* A no-op stand-in for libgupnp-igd-1.0.so.4, loaded with LD_PRELOAD into Debian's
 * simple-whip-client (`whip-client`) by tests/simple_whip_client.rs.
 *
 * Why: on bookworm whip-client links libsoup 2.4, while libnice needs libgupnp-igd, which
 * pulls in gupnp-1.6 and libsoup 3; libsoup 3 aborts a process that has libsoup 2 symbols
 * ("libsoup2 symbols detected"). Built with this library's soname, this file satisfies
 * libnice's dependency, so the real one (and libsoup 3) is never loaded. UPnP port mapping
 * is then off: gupnp_simple_igd_thread_new returns NULL, which libnice takes as "no UPnP".
 *
 * Also: getifaddrs hides every interface address but 127.0.0.1, so libnice gathers (and
 * trickles) loopback candidates only and the server under test never sends to another
 * address. libnice skips loopback interfaces unless told otherwise, so the flag is cleared.
 *
 * Built by the test: cc -shared -fPIC -Wl,-soname,libgupnp-igd-1.0.so.4 (no GLib headers:
 * the functions libnice calls take or return only pointers and a GType). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>

void *gupnp_simple_igd_thread_new(void) { return NULL; }

/* G_TYPE_OBJECT: never used on a NULL agent, but a valid type if it were. */
unsigned long gupnp_simple_igd_get_type(void) { return 20 << 2; }

void gupnp_simple_igd_add_port(void) {}

void gupnp_simple_igd_remove_port_local(void) {}

int getifaddrs(struct ifaddrs **out) {
  int (*real)(struct ifaddrs **) =
      (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
  if (real == NULL) return -1;
  int result = real(out);
  if (result != 0) return result;
  /* glibc allocates the list as one block that freeifaddrs frees from its head: entries
   * are blanked (no address) rather than unlinked. */
  for (struct ifaddrs *i = *out; i != NULL; i = i->ifa_next) {
    int loopback = i->ifa_addr != NULL && i->ifa_addr->sa_family == AF_INET &&
                   ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
                       htonl(INADDR_LOOPBACK);
    if (loopback) {
      i->ifa_flags &= ~IFF_LOOPBACK;
    } else {
      i->ifa_addr = NULL;
    }
  }
  return 0;
}
