using System.Reflection;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;

namespace IlgpuLlama.Kernels;

/// <summary>One kernel entry point as compiled for the device.</summary>
/// <param name="Name">file-friendly name, e.g. <c>matvec_fp16</c></param>
/// <param name="Family">kernel family (one source file)</param>
/// <param name="Method">the kernel method (generic arguments bound)</param>
/// <param name="ExplicitlyGrouped">true when the kernel uses Grid/Group (KernelConfig launch)</param>
public sealed record KernelEntry(string Name, string Family, MethodInfo Method, bool ExplicitlyGrouped);

/// <summary>Every kernel the engine launches, for PTX emission and static checks.</summary>
public static class KernelCatalog
{
    static MethodInfo M(Type t, string name, Type? weight = null)
    {
        var m = t.GetMethod(name, BindingFlags.Public | BindingFlags.Static) ?? throw new InvalidOperationException($"{t.Name}.{name} not found");
        return weight is null ? m : m.MakeGenericMethod(weight);
    }

    static MethodInfo M2(Type t, string name, Type weight, Type batch) =>
        (t.GetMethod(name, BindingFlags.Public | BindingFlags.Static) ?? throw new InvalidOperationException($"{t.Name}.{name} not found")).MakeGenericMethod(weight, batch);

    /// <summary>All entries, both weight storage types for the weight-reading kernels, every decode batch width.</summary>
    public static IReadOnlyList<KernelEntry> All { get; } = Build();

    static List<KernelEntry> Build()
    {
        var list = new List<KernelEntry>();
        foreach (var (suffix, w) in new[] { ("fp16", typeof(Fp16Format)), ("bf16", typeof(Bf16Format)) })
        {
            foreach (var (b, bt) in new[] { (1, typeof(Batch1)), (2, typeof(Batch2)), (3, typeof(Batch3)), (4, typeof(Batch4)) })
            {
                list.Add(new($"matvec_{suffix}_b{b}", "matvec", M2(typeof(MatVecKernels), nameof(MatVecKernels.MatVec), w, bt), true));
                list.Add(new($"matvec_swiglu_{suffix}_b{b}", "matvec", M2(typeof(MatVecKernels), nameof(MatVecKernels.MatVecSwiGlu), w, bt), true));
                list.Add(new($"matvec_qkv_rope_{suffix}_b{b}", "matvec", M2(typeof(MatVecKernels), nameof(MatVecKernels.MatVecQkvRope), w, bt), true));
            }
            list.Add(new($"gemm_{suffix}", "gemm", M(typeof(GemmKernels), nameof(GemmKernels.Gemm), w), true));
            list.Add(new($"rmsnorm_{suffix}", "rmsnorm", M(typeof(RmsNormKernels), nameof(RmsNormKernels.RmsNorm), w), true));
            list.Add(new($"embedding_{suffix}", "embedding", M(typeof(EmbeddingKernels), nameof(EmbeddingKernels.Embedding), w), false));
        }
        list.Add(new("attention", "attention", M(typeof(AttentionKernels), nameof(AttentionKernels.Attention)), true));
        list.Add(new("rope", "rope", M(typeof(RopeKernels), nameof(RopeKernels.Rope)), false));
        list.Add(new("kv_append", "kvcache", M(typeof(KvCacheKernels), nameof(KvCacheKernels.KvAppend)), false));
        list.Add(new("swiglu", "elementwise", M(typeof(ElementwiseKernels), nameof(ElementwiseKernels.SwiGlu)), false));
        list.Add(new("gather_rows", "elementwise", M(typeof(ElementwiseKernels), nameof(ElementwiseKernels.GatherRows)), false));
        list.Add(new("mark_seen", "elementwise", M(typeof(ElementwiseKernels), nameof(ElementwiseKernels.MarkSeen)), false));
        list.Add(new("add_scalar", "elementwise", M(typeof(ElementwiseKernels), nameof(ElementwiseKernels.AddScalar)), false));
        list.Add(new("logits_reduce", "logits", M(typeof(LogitsKernels), nameof(LogitsKernels.Reduce)), true));
        list.Add(new("topk", "logits", M(typeof(LogitsKernels), nameof(LogitsKernels.TopK)), true));
        list.Add(new("repetition_penalty", "logits", M(typeof(LogitsKernels), nameof(LogitsKernels.RepetitionPenalty)), false));
        return list;
    }

    /// <summary>Parses "sm_60" style names.</summary>
    public static CudaArchitecture ParseArchitecture(string arch) => arch.ToLowerInvariant() switch
    {
        "sm_60" => CudaArchitecture.SM_60,
        "sm_61" => CudaArchitecture.SM_61,
        "sm_70" => CudaArchitecture.SM_70,
        "sm_75" => CudaArchitecture.SM_75,
        "sm_80" => CudaArchitecture.SM_80,
        "sm_86" => CudaArchitecture.SM_86,
        "sm_89" => CudaArchitecture.SM_89,
        "sm_90" => CudaArchitecture.SM_90,
        _ => throw new ArgumentException($"unknown architecture '{arch}'; use one of sm_60, sm_61, sm_70, sm_75, sm_80, sm_86, sm_89, sm_90"),
    };

    /// <summary>
    /// Compiles every kernel to PTX for <paramref name="architecture"/> with ILGPU's PTX backend.
    /// Needs no GPU. ISA 7.8 is the newest that the ptxas of CUDA 11.8 (the P100 check) reads.
    /// </summary>
    public static IReadOnlyList<(KernelEntry Entry, string Ptx)> CompilePtx(CudaArchitecture architecture, CudaInstructionSet? isa = null)
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        var backend = new PTXBackend(context, architecture, isa ?? CudaInstructionSet.ISA_78, null!);
        var result = new List<(KernelEntry, string)>();
        foreach (var e in All)
        {
            var description = e.ExplicitlyGrouped
                ? EntryPointDescription.FromExplicitlyGroupedKernel(e.Method)
                : EntryPointDescription.FromImplicitlyGroupedKernel(e.Method);
            var compiled = (PTXCompiledKernel)backend.Compile(description, KernelSpecialization.Empty);
            result.Add((e, compiled.PTXAssembly));
        }
        return result;
    }
}
