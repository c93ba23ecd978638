using IlgpuLlama.Cli.Analysis;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Tests.Cli;

public sealed class PtxasReportTests
{
    const string CleanLog = """
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function 'Kernel_MatVec' for 'sm_60'
        ptxas info    : Function properties for Kernel_MatVec
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 78 registers, 2048 bytes smem, 388 bytes cmem[0]
        """;

    const string SpillingLog = """
        ptxas info    : 0 bytes gmem
        ptxas info    : Function properties for helper
            16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Compiling entry function 'Kernel_X' for 'sm_60'
        ptxas info    : Function properties for Kernel_X
            40 bytes stack frame, 36 bytes spill stores, 36 bytes spill loads
        ptxas info    : Used 255 registers, 388 bytes cmem[0]
        """;

    [Fact]
    public void Parses_registers_shared_memory_and_spills()
    {
        var f = Assert.Single(PtxasLog.Parse(CleanLog));
        Assert.Equal(new PtxasFunction("Kernel_MatVec", true, 78, 2048, 0, 0, 0), f);

        var spilling = PtxasLog.Parse(SpillingLog);
        Assert.Equal(2, spilling.Count);
        Assert.Equal(new PtxasFunction("Kernel_X", true, 255, 0, 40, 36, 36), spilling[0]);
        Assert.Equal(new PtxasFunction("helper", false, -1, 0, 16, 0, 0), spilling[1]);
        Assert.Empty(PtxasLog.Errors(CleanLog));
        Assert.Single(PtxasLog.Errors("ptxas fatal   : Unresolved extern function 'foo'\n"));
    }

    [Theory]
    // registers, shared bytes, block -> blocks/SM, occupancy, limiter (P100: 64K regs in 2 partitions, 64 warps, 32 blocks, 64 KB)
    [InlineData(78, 2048, 256, 3, 0.375, "registers")]  // 2560 regs/warp: 12 warps per partition
    [InlineData(78, 2048, 128, 6, 0.375, "registers")]
    [InlineData(38, 8320, 256, 6, 0.75, "registers")]   // 1280 regs/warp: 25 warps per partition
    [InlineData(32, 0, 1024, 2, 1.0, "-")]
    [InlineData(16, 256, 256, 8, 1.0, "-")]
    [InlineData(19, 32784, 256, 1, 0.125, "shared")]    // top-k: 32 KB dynamic + 16 B static
    [InlineData(8, 0, 32, 32, 0.5, "blocks")]
    [InlineData(20, 49200, 128, 0, 0.0, "shared")]      // over 48 KB per block: cannot launch
    public void Occupancy_matches_the_cuda_calculator_on_sm_60(int regs, int shared, int block, int blocks, double occupancy, string limiter)
    {
        var r = Occupancy.Compute(GpuSpec.Sm60, regs, shared, block);
        Assert.Equal(blocks, r.BlocksPerSm);
        Assert.Equal(occupancy, r.Fraction, 6);
        Assert.Equal(limiter, r.Limiter);
    }

    [Fact]
    public void Auto_block_size_picks_the_largest_block_with_the_highest_occupancy()
    {
        Assert.Equal(1024, Occupancy.AutoBlockSize(GpuSpec.Sm60, 10, 0).BlockSize);
        // 40 registers: 1280 per warp, 25 warps per partition -> at most 50 warps per SM. A 1024-thread block (32 warps)
        // fits once; the largest block that reaches 50 warps is 25 warps (800 threads), twice.
        var r = Occupancy.AutoBlockSize(GpuSpec.Sm60, 40, 0);
        Assert.Equal(50, r.ActiveWarps);
        Assert.Equal(800, r.BlockSize);
    }

    [Fact]
    public void Report_flags_spills_missing_wide_loads_and_local_memory()
    {
        string dir = CliHarness.TempDir();
        try
        {
            foreach (var e in KernelCatalog.All)
            {
                bool bad = e.Name == "matvec_fp16_b1";
                File.WriteAllText(Path.Combine(dir, e.Name + ".ptx"), bad ? "ld.global.f32 %f1, [%rd1];" : "ld.global.nc.v4.u32 {%r1,%r2,%r3,%r4}, [%rd1];");
                File.WriteAllText(Path.Combine(dir, e.Name + ".ptxas.txt"), bad ? SpillingLog : CleanLog);
                File.WriteAllText(Path.Combine(dir, e.Name + ".sass"), bad
                    ? "        /*0210*/                   LDG.E R36, [R36] ;\n        /*0218*/                   STL [R1], R2 ;\n"
                    : "        /*0210*/                   LDG.E.128 R36, [R36] ;\n");
            }
            var report = PtxasReport.Build(dir, "sm_60", "test");
            Assert.False(report.Passed);
            var failed = Assert.Single(report.Kernels, k => k.Problems.Count > 0);
            Assert.Equal("matvec_fp16_b1", failed.Kernel);
            Assert.Contains(failed.Problems, p => p.Contains("spill stores"));
            Assert.Contains(failed.Problems, p => p.Contains("ld.global.v4"));
            Assert.Contains(failed.Problems, p => p.Contains("LDG.E.128"));
            Assert.Contains(failed.Problems, p => p.Contains("LDL/STL"));
            Assert.Contains("FAIL", PtxasReport.Markdown(report));

            var r = CliHarness.Run("ptxas-report", "--dir", dir);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains("FAIL matvec_fp16_b1", r.Err);
            Assert.Contains("| matvec_bf16_b4 |", r.Out);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Table_is_rewritten_between_the_markers_only()
    {
        string doc = $"# T\n\nbefore\n{PtxasReport.StartMarker}\nold table\n{PtxasReport.EndMarker}\nafter\n";
        string updated = PtxasReport.ReplaceBetweenMarkers(doc, "| new |\n");
        Assert.Equal($"# T\n\nbefore\n{PtxasReport.StartMarker}\n| new |\n{PtxasReport.EndMarker}\nafter\n", updated);
        Assert.Equal(updated, PtxasReport.ReplaceBetweenMarkers(updated, "| new |\n"));
        Assert.Throws<InvalidOperationException>(() => PtxasReport.ReplaceBetweenMarkers("no markers", "x"));
    }

    [Fact]
    public void Launch_shapes_use_llama_3_2_1b_dynamic_shared_memory()
    {
        var attention = KernelCatalog.All.Single(e => e.Name == "attention").GpuLaunch;
        Assert.Equal(128, attention.GroupSize);
        Assert.Equal((2 * 4 * 64 + 4 * 128 + 3 * 4) * 4, attention.DynamicSharedBytes); // q and accumulators, scores, m/l/alpha
        var topk = KernelCatalog.All.Single(e => e.Name == "topk").GpuLaunch;
        Assert.Equal(2 * 4096 * 4, topk.DynamicSharedBytes);
        Assert.Null(KernelCatalog.All.Single(e => e.Name == "swiglu").GpuLaunch.GroupSize);
        Assert.Equal(256, KernelCatalog.All.Single(e => e.Name == "matvec_fp16_b1").GpuLaunch.GroupSize);
    }
}
