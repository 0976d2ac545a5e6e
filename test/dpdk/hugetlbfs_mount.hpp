// A private hugetlbfs mount for the EAL modes that need one (--legacy-mem,
// --socket-mem, the default mode), removed at exit. Root only; the suite is
// skipped otherwise. And the files the default EAL mode leaves behind.
#ifndef MRSYNC_TEST_HUGETLBFS_MOUNT_HPP
#define MRSYNC_TEST_HUGETLBFS_MOUNT_HPP

#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace mrsync::test {

class HugetlbfsMount {
public:
	HugetlbfsMount()
	{
		char tmpl[] = "/tmp/mrsync-huge-XXXXXX";
		if (!mkdtemp(tmpl))
			return;
		dir_ = tmpl;
		if (mount("nodev", dir_.c_str(), "hugetlbfs", 0, "pagesize=2M") != 0) {
			rmdir(dir_.c_str());
			dir_.clear();
		}
	}
	~HugetlbfsMount()
	{
		if (dir_.empty())
			return;
		umount2(dir_.c_str(), MNT_DETACH);
		rmdir(dir_.c_str());
	}
	HugetlbfsMount(const HugetlbfsMount &) = delete;
	HugetlbfsMount &operator=(const HugetlbfsMount &) = delete;

	/** The mount point, or "" if mounting failed (not root). */
	const std::string &dir() const { return dir_; }

private:
	std::string dir_;
};

/**
 * Removes what an EAL in the default mode leaves after rte_eal_cleanup(): its
 * hugepage files (`<prefix>map_*` in huge_dir, which keep their hugepages
 * until deleted and unmapped) and its runtime directory (/var/run/dpdk/<prefix>
 * for root). @return the number of files removed.
 */
inline int remove_eal_files(const std::string &prefix, const std::string &huge_dir)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	int n = 0;
	for (const auto &e : fs::directory_iterator(huge_dir, ec))
		if (e.path().filename().string().rfind(prefix + "map_", 0) == 0)
			n += fs::remove(e.path(), ec) ? 1 : 0;
	const char *xdg = std::getenv("XDG_RUNTIME_DIR");
	const fs::path run = geteuid() == 0 || !xdg ? fs::path("/var/run/dpdk") : fs::path(xdg) / "dpdk";
	const auto removed = fs::remove_all(run / prefix, ec);
	return n + (removed == std::uintmax_t(-1) ? 0 : int(removed));
}

} // namespace mrsync::test

#endif
