namespace IlgpuLlama.Kernels;

/// <summary>
/// Launch shapes of every kernel family for one accelerator. GPU defaults come from the design
/// in each kernel file's header; on the CPU accelerator every group size is clamped to what the
/// device allows (its groups are emulated with OS threads, so they are small there).
/// </summary>
public sealed record KernelTuning
{
    /// <summary>Upper bound of threads per group for matvec (the kernel uses fewer for short rows).</summary>
    public int MatVecMaxGroup { get; init; } = 256;

    /// <summary>Threads per group for RMSNorm.</summary>
    public int RmsNormGroup { get; init; } = 1024;

    /// <summary>Threads per group for attention (also the key tile length).</summary>
    public int AttentionGroup { get; init; } = 128;

    /// <summary>Fewest keys one attention split handles; shorter rows use fewer splits.</summary>
    public int AttentionMinChunk { get; init; } = 32;

    /// <summary>Threads per side of a GEMM tile (group = square of it; tile = 4x it).</summary>
    public int GemmTDim { get; init; } = 16;

    /// <summary>Threads per group of the logits reduction and top-k.</summary>
    public int LogitsGroup { get; init; } = 256;

    /// <summary>Vocabulary entries one logits-reduction group scans.</summary>
    public int LogitsSlice { get; init; } = 4096;

    /// <summary>Power-of-two slice one top-k group sorts in shared memory.</summary>
    public int TopKSlice { get; init; } = 4096;

    /// <summary>Threads per group of the float64 matmul (<see cref="PreciseKernels"/>): whole warps, one weight row each; one warp on the CPU accelerator.</summary>
    public int PreciseGroup { get; init; } = 128;

    /// <summary>Groups of a persistent decode-layer launch; 0: four per multiprocessor on a GPU, one per emulated multiprocessor on the CPU (any number is correct).</summary>
    public int PersistentGroups { get; init; }

    /// <summary>Defaults for an accelerator, clamped to its limits.</summary>
    public static KernelTuning For(Accelerator accelerator)
    {
        var t = new KernelTuning();
        return accelerator.AcceleratorType == AcceleratorType.CPU
            ? (t with { AttentionMinChunk = 8, TopKSlice = 1024, LogitsSlice = 1024, PreciseGroup = accelerator.WarpSize }).ClampTo(accelerator)
            : t.ClampTo(accelerator);
    }

    /// <summary>Clamps every group size to the accelerator's maximum and rounds to whole warps.</summary>
    public KernelTuning ClampTo(Accelerator accelerator)
    {
        int warp = accelerator.WarpSize;
        int max = accelerator.MaxNumThreadsPerGroup;
        int Fit(int n) => Math.Max(warp, Math.Min(n, max) / warp * warp);
        int td = GemmTDim;
        while (td > 1 && td * td > max)
            td /= 2;
        return this with
        {
            MatVecMaxGroup = Fit(MatVecMaxGroup),
            RmsNormGroup = Fit(RmsNormGroup),
            AttentionGroup = Fit(AttentionGroup),
            GemmTDim = td,
            PreciseGroup = Fit(PreciseGroup),
            LogitsGroup = Fit(LogitsGroup),
        };
    }
}
