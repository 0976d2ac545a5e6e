// /mrsync/stats and /mrsync/regions through the EAL's telemetry socket, read
// the way dpdk-telemetry.py reads them.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

/* One request on the v2 socket (SOCK_SEQPACKET: one message per read). */
std::string telemetry(const std::string &command)
{
	const std::string path = std::string(rte_eal_get_runtime_dir()) + "/dpdk_telemetry.v2";
	const int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (fd < 0)
		return "socket failed";
	sockaddr_un sun{};
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path.c_str());
	std::string reply(64 * 1024, '\0');
	if (connect(fd, reinterpret_cast<sockaddr *>(&sun), sizeof(sun)) < 0) {
		close(fd);
		return "cannot connect to " + path;
	}
	(void)read(fd, reply.data(), reply.size()); /* the greeting */
	(void)!write(fd, command.data(), command.size());
	const ssize_t n = read(fd, reply.data(), reply.size());
	close(fd);
	return n > 0 ? reply.substr(0, n) : "no reply";
}

/* The value of "key": N in a JSON reply, or -1. */
long long json_number(const std::string &json, const std::string &key)
{
	const auto at = json.find("\"" + key + "\":");
	if (at == std::string::npos)
		return -1;
	return std::stoll(json.substr(at + key.size() + 3));
}

TEST(DpdkTelemetry, StatsAndRegionsAreServed)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	EalBuffer buf(4u << 20);
	ASSERT_TRUE(buf.p);
	for (int i = 0; i < 10; ++i)
		ASSERT_TRUE(a.write_lands(buf.p, 64, i));

	const std::string stats = telemetry("/mrsync/stats");
	ASSERT_NE(stats.find("\"/mrsync/stats\""), std::string::npos) << stats;
	EXPECT_EQ(json_number(stats, "lookups"), (long long)a.stats().lookups) << stats;
	EXPECT_GE(json_number(stats, "lcore_hits"), 9) << stats;
	EXPECT_GE(json_number(stats, "regions"), 1) << stats;
	EXPECT_NE(stats.find("\"driver\":\"uring\""), std::string::npos) << stats;

	mrsync_dpdk_key key;
	ASSERT_EQ(mrsync_dpdk_lookup(a.lcore(), buf.p, 64, &key), 0);
	char want[64];
	snprintf(want, sizeof(want), "0x%llx+0x%llx lkey=0x%x", (unsigned long long)key.addr,
		 (unsigned long long)key.length, key.lkey);
	const std::string regions = telemetry("/mrsync/regions");
	ASSERT_NE(regions.find("\"/mrsync/regions\":["), std::string::npos) << regions;
	EXPECT_NE(regions.find(want), std::string::npos) << "no " << want << " in " << regions;
}

} // namespace
} // namespace mrsync::test
