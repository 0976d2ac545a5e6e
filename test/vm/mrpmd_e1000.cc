/* SPDX-License-Identifier: MIT */
/*
 * mrpmd on two emulated e1000 NICs bound to vfio-pci, in the QEMU guest
 * (test/vm/run puts them on one hub at 00:10.0 and 00:11.0, guest.sh binds
 * them): DPDK's own PMD (net_e1000_em) sends packets whose buffers are plain
 * anonymous memory, --churn replaces that memory under traffic, the peer
 * port checks every packet by content (docs/vfio.md, "mrpmd on e1000").
 *
 *   mrsync_vm_mrpmd_e1000 MRPMD --extbuf=vfio|dma-map-once --expect=clean|corrupted
 *                         [--seconds=S]
 *
 * --expect=clean (--extbuf=vfio, mrsync keeps the IOMMU in step): packets
 * were checked, chunks replaced and resynced, 0 corrupted.
 * --expect=corrupted (--extbuf=dma-map-once, the negative control: mapped
 * once by rte_dev_dma_map and never resynced): corrupted packets seen.
 * Reserves the hugepages DPDK needs for the run and gives them back.
 * Exit 77 (skipped) without the bound NICs, unless MRSYNC_VM_GUEST is set.
 */
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr const char *kPorts[] = {"0000:00:10.0", "0000:00:11.0"};
constexpr const char *kHugepages = "/proc/sys/vm/nr_hugepages";
constexpr int kHugepagesNeeded = 160; /* 320 MiB: EAL, queues, 8192 mbufs */

bool bound_to_vfio(const char *bdf)
{
	char link[256] = {};
	const std::string path = std::string("/sys/bus/pci/devices/") + bdf + "/driver";
	const ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
	return n > 0 && std::strstr(link, "/vfio-pci") != nullptr;
}

int read_int(const char *path)
{
	std::ifstream f(path);
	int v = -1;
	f >> v;
	return v;
}

bool write_int(const char *path, int v)
{
	std::ofstream f(path);
	f << v;
	f.flush();
	return bool(f);
}

/* Runs argv, echoing its output, and returns {exit status, output}. */
std::pair<int, std::string> run(const std::vector<std::string> &args, unsigned limit_s)
{
	int fds[2];
	if (pipe(fds) != 0)
		return {-1, {}};
	const pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		alarm(limit_s); /* survives exec: a hung mrpmd dies, freeing the NICs */
		std::vector<char *> argv;
		for (const std::string &a : args)
			argv.push_back(const_cast<char *>(a.c_str()));
		argv.push_back(nullptr);
		execv(argv[0], argv.data());
		perror(argv[0]);
		_exit(127);
	}
	close(fds[1]);
	std::string out;
	char buf[4096];
	for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) {
		out.append(buf, std::size_t(n));
		fwrite(buf, 1, std::size_t(n), stdout);
		fflush(stdout); /* the guest's log is a file: keep what a hang printed */
	}
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	fflush(stdout);
	return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

/* The key=value pairs of the output's line starting with `prefix`. */
std::map<std::string, std::string> fields(const std::string &out, const std::string &prefix)
{
	std::map<std::string, std::string> kv;
	std::istringstream lines(out);
	for (std::string line; std::getline(lines, line);) {
		if (line.rfind(prefix, 0) != 0)
			continue;
		std::istringstream words(line.substr(prefix.size()));
		for (std::string w; words >> w;)
			if (auto eq = w.find('='); eq != std::string::npos)
				kv[w.substr(0, eq)] = w.substr(eq + 1);
	}
	return kv;
}

unsigned long long num(const std::map<std::string, std::string> &kv, const char *key)
{
	auto it = kv.find(key);
	return it == kv.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 0);
}

int usage()
{
	fprintf(stderr, "usage: mrsync_vm_mrpmd_e1000 MRPMD --extbuf=vfio|dma-map-once "
			"--expect=clean|corrupted [--seconds=S]\n");
	return 2;
}

} // namespace

int main(int argc, char **argv)
{
	std::string extbuf, expect, seconds = "5";
	if (argc < 2)
		return usage();
	for (int i = 2; i < argc; ++i) {
		const std::string a = argv[i];
		if (a.rfind("--extbuf=", 0) == 0)
			extbuf = a.substr(9);
		else if (a.rfind("--expect=", 0) == 0)
			expect = a.substr(9);
		else if (a.rfind("--seconds=", 0) == 0)
			seconds = a.substr(10);
		else
			return fprintf(stderr, "mrpmd_e1000: unknown argument '%s'\n", argv[i]), usage();
	}
	if ((extbuf != "vfio" && extbuf != "dma-map-once") ||
	    (expect != "clean" && expect != "corrupted"))
		return usage();
	for (const char *bdf : kPorts) {
		if (bound_to_vfio(bdf))
			continue;
		fprintf(stderr, "mrpmd_e1000: %s is not an e1000 bound to vfio-pci (the QEMU guest "
				"of test/vm/run has two)\n", bdf);
		return std::getenv("MRSYNC_VM_GUEST") ? 1 : 77;
	}
	const int hugepages = read_int(kHugepages);
	if (hugepages < kHugepagesNeeded && !write_int(kHugepages, kHugepagesNeeded)) {
		fprintf(stderr, "mrpmd_e1000: cannot reserve %d hugepages\n", kHugepagesNeeded);
		return 1;
	}
	const auto t0 = std::chrono::steady_clock::now();
	const auto [status, out] = run({argv[1], "-l", "0-1", "-n", "1", "--in-memory",
		"--no-telemetry", "--log-level=pmd.net.e1000*:info", "-a", kPorts[0], "-a",
		kPorts[1], "--", "--hca=none", "--extbuf=" + extbuf, "--churn",
		"--txpkt-len=256", "--stats-period=0", "--seconds=" + seconds},
		unsigned(std::atoi(seconds.c_str())) + 120);
	const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	if (hugepages < kHugepagesNeeded)
		write_int(kHugepages, hugepages);

	const auto kv = fields(out, "mrpmd-extbuf:");
	if (kv.empty()) {
		fprintf(stderr, "mrpmd_e1000: FAIL: mrpmd (exit %d) printed no mrpmd-extbuf line\n",
			status);
		return 1;
	}
	const auto sent = num(kv, "sent"), checked = num(kv, "checked"),
		   corrupted = num(kv, "corrupted"), remaps = num(kv, "remaps"),
		   resyncs = num(kv, "resyncs");
	printf("mrpmd_e1000: extbuf=%s sent=%llu checked=%llu corrupted=%llu remaps=%llu "
	       "resyncs=%llu (mrpmd exit %d, %.1f s)\n",
	       extbuf.c_str(), sent, checked, corrupted, remaps, resyncs, status, took);
	bool ok = true;
	auto expect_that = [&ok](bool cond, const char *what) {
		if (!cond) {
			fprintf(stderr, "mrpmd_e1000: FAIL: %s\n", what);
			ok = false;
		}
	};
	/* Both runs must have moved packets under churn, or they prove nothing. */
	expect_that(sent > 0 && checked > 0, "no packet went from one port to the other");
	expect_that(remaps > 0, "--churn replaced no memory under traffic");
	if (expect == "clean") {
		expect_that(corrupted == 0, "corrupted packets with mrsync keeping the IOMMU in step");
		expect_that(resyncs > 0, "mrsync never resynced: the churn went unseen");
		expect_that(status == 0, "mrpmd failed");
	} else {
		expect_that(corrupted > 0, "negative control: the stale mapping corrupted nothing");
		expect_that(status == 1, "negative control: mrpmd should exit 1 on corruption");
	}
	printf("mrpmd_e1000: %s\n", ok ? "PASS" : "FAIL");
	return ok ? 0 : 1;
}
