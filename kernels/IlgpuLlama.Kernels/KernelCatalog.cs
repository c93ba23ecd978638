using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;

namespace IlgpuLlama.Kernels;

/// <summary>
/// Every kernel family, found by reflection over this assembly (each kernel file declares one
/// <see cref="KernelFamily"/>), and from them every entry point the engine launches: what
/// <c>ilgpu-llama ptx</c> compiles, the static check assembles and <c>bench kernels</c> times.
/// </summary>
public static class KernelCatalog
{
    /// <summary>Every family, by name.</summary>
    public static IReadOnlyList<KernelFamily> Families { get; } = typeof(KernelFamily).Assembly.GetTypes()
        .Where(t => t.IsSubclassOf(typeof(KernelFamily)) && !t.IsAbstract)
        .Select(t => (KernelFamily)Activator.CreateInstance(t, nonPublic: true)!)
        .OrderBy(f => f.Name, StringComparer.Ordinal)
        .ToArray();

    /// <summary>All entries: every specialisation (weight format, decode batch width) of every kernel.</summary>
    public static IReadOnlyList<KernelEntry> All { get; } = Families.SelectMany(f => f.Kernels).SelectMany(k => k.Entries).ToArray();

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
