using IlgpuLlama.Kernels;

namespace IlgpuLlama.Cli.Analysis;

/// <summary>How the engine launches one kernel on a GPU, at Llama 3.2 1B shapes.</summary>
/// <param name="GroupSize">threads per group, or null for an implicitly grouped kernel (ILGPU picks the size)</param>
/// <param name="DynamicSharedBytes">dynamic shared memory per group</param>
/// <param name="Note">where the numbers come from</param>
public sealed record LaunchShape(int? GroupSize, int DynamicSharedBytes, string Note);

/// <summary>
/// Launch shapes the engine uses on a GPU (defaults of <see cref="KernelTuning"/>), evaluated at
/// Llama 3.2 1B shapes (hidden 2048, 32 heads, 8 kv heads, head_dim 64, vocab 128256). Used for
/// the occupancy column of the ptxas table.
/// </summary>
public static class KernelLaunchShapes
{
    /// <summary>Llama 3.2 1B: query heads.</summary>
    public const int Heads = 32;

    /// <summary>Llama 3.2 1B: key/value heads.</summary>
    public const int KvHeads = 8;

    /// <summary>Llama 3.2 1B: head dimension.</summary>
    public const int HeadDim = 64;

    /// <summary>The launch shape of a catalog kernel.</summary>
    public static LaunchShape For(KernelEntry entry)
    {
        var t = new KernelTuning();
        if (!entry.ExplicitlyGrouped)
            return new LaunchShape(null, 0, "implicitly grouped: ILGPU asks the CUDA occupancy API for the group size");
        return entry.Family switch
        {
            "matvec" => new LaunchShape(t.MatVecMaxGroup, 0,
                $"launched with 32..{t.MatVecMaxGroup} threads (in/32 rounded up to warps: 64 at hidden 2048, 256 for the 8192-wide down projection); table uses {t.MatVecMaxGroup}"),
            "gemm" => new LaunchShape(t.GemmTDim * t.GemmTDim, 0, $"{t.GemmTDim}x{t.GemmTDim} threads per 64x64 tile"),
            "rmsnorm" => new LaunchShape(t.RmsNormGroup, 0, "one group per row"),
            "attention" => AttentionShape(t),
            "logits" when entry.Name == "topk" => new LaunchShape(t.LogitsGroup, 2 * t.TopKSlice * sizeof(float),
                $"slice {t.TopKSlice}: 2 x {t.TopKSlice} floats of dynamic shared memory"),
            "logits" => new LaunchShape(t.LogitsGroup, 0, $"slice {t.LogitsSlice} logits per group"),
            _ => throw new InvalidOperationException($"no launch shape known for kernel {entry.Name} (family {entry.Family})"),
        };
    }

    static LaunchShape AttentionShape(KernelTuning t)
    {
        int group = t.AttentionGroup;
        int floats = AttentionKernels.SharedFloats(Heads, KvHeads, HeadDim, group);
        return new LaunchShape(group, floats * sizeof(float), $"{Heads / KvHeads} query heads per kv head, head_dim {HeadDim}: {floats} floats of dynamic shared memory");
    }
}
