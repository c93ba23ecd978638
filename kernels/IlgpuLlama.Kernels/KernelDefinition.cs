using System.Reflection;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;

namespace IlgpuLlama.Kernels;

/// <summary>
/// The decode batch as a compile-time constant: each decode kernel is specialised per batch width
/// so the code and registers for absent batch entries disappear (batch 1, the latency-critical
/// case, needs far fewer registers than batch 4, so more groups fit on an SM).
/// </summary>
public interface IBatchWidth
{
    /// <summary>Number of activation vectors.</summary>
    int Count { get; }
}

/// <summary>One vector.</summary>
public struct Batch1 : IBatchWidth
{
    public readonly int Count => 1;
}

/// <summary>Two vectors.</summary>
public struct Batch2 : IBatchWidth
{
    public readonly int Count => 2;
}

/// <summary>Three vectors.</summary>
public struct Batch3 : IBatchWidth
{
    public readonly int Count => 3;
}

/// <summary>Four vectors.</summary>
public struct Batch4 : IBatchWidth
{
    public readonly int Count => 4;
}

/// <summary>The batch widths a decode kernel is compiled for.</summary>
public static class BatchWidth
{
    /// <summary>Largest batch one decode-kernel launch handles.</summary>
    public const int Max = 4;

    static readonly Type[] Types = [typeof(Batch1), typeof(Batch2), typeof(Batch3), typeof(Batch4)];

    /// <summary>The <see cref="IBatchWidth"/> struct of width <paramref name="batch"/> (1..<see cref="Max"/>).</summary>
    public static Type TypeOf(int batch) => batch is >= 1 and <= Max
        ? Types[batch - 1]
        : throw new ArgumentOutOfRangeException(nameof(batch), batch, $"batch width must be between 1 and {Max}");
}

/// <summary>How a kernel is launched: ILGPU picks the group size (implicit) or the launcher does (explicit).</summary>
public enum KernelGrouping
{
    /// <summary>One thread per index; <c>LoadAutoGroupedKernel</c>.</summary>
    Implicit,

    /// <summary>Grid and group given by the launcher; the kernel uses Group/Warp/SharedMemory.</summary>
    Explicit,
}

/// <summary>The compile-time choices of one kernel specialisation.</summary>
/// <param name="Format">weight format, for kernels that read weights</param>
/// <param name="Batch">decode batch width, for batch-specialised kernels (0: none)</param>
public readonly record struct KernelVariant(WeightFormat? Format, int Batch)
{
    /// <summary>The kernel has no compile-time choices.</summary>
    public static KernelVariant None => default;

    /// <summary>Suffix of the catalog name: <c>_fp16</c>, <c>_fp16_b2</c> or nothing.</summary>
    public string Suffix => (Format is null ? "" : "_" + Format.Name) + (Batch > 0 ? $"_b{Batch}" : "");
}

/// <summary>How the engine launches a kernel on a GPU, for the occupancy column of the static check.</summary>
/// <param name="GroupSize">threads per group, or null for an implicitly grouped kernel (ILGPU picks the size)</param>
/// <param name="DynamicSharedBytes">dynamic shared memory per group</param>
/// <param name="Note">where the numbers come from</param>
public sealed record LaunchShape(int? GroupSize, int DynamicSharedBytes, string Note)
{
    /// <summary>The shape of every implicitly grouped kernel.</summary>
    public static LaunchShape Auto { get; } = new(null, 0, "implicitly grouped: ILGPU asks the CUDA occupancy API for the group size");
}

/// <summary>One compiled entry point of the catalog: a kernel method with its generic arguments bound.</summary>
/// <param name="Name">file-friendly name, e.g. <c>matvec_fp16_b1</c></param>
/// <param name="Family">kernel family (one source file)</param>
/// <param name="Method">the kernel method (generic arguments bound)</param>
/// <param name="ExplicitlyGrouped">true when the kernel uses Grid/Group (KernelConfig launch)</param>
/// <param name="GpuLaunch">how the engine launches it on a GPU (default tuning, Llama 3.2 1B shapes)</param>
public sealed record KernelEntry(string Name, string Family, MethodInfo Method, bool ExplicitlyGrouped, LaunchShape GpuLaunch);

/// <summary>A kernel declaration without its argument type (what the catalog enumerates).</summary>
public interface IKernelDefinition
{
    /// <summary>Base of the catalog names, e.g. <c>matvec_swiglu</c>.</summary>
    string Name { get; }

    /// <summary>Family (source file), e.g. <c>matvec</c>.</summary>
    string Family { get; }

    /// <summary>Launch style.</summary>
    KernelGrouping Grouping { get; }

    /// <summary>Every specialisation the engine may launch.</summary>
    IReadOnlyList<KernelVariant> Variants { get; }

    /// <summary>The kernel method for a specialisation.</summary>
    MethodInfo Method(KernelVariant variant);

    /// <summary>The catalog entries, one per specialisation.</summary>
    IEnumerable<KernelEntry> Entries { get; }
}

/// <summary>
/// One kernel entry point, declared once next to its code: its name and family, whether it is
/// specialised per weight format and per decode batch width, and how it is launched on a GPU.
/// The launcher (<see cref="LlamaKernels.Launch{TArgs}(KernelDefinition{TArgs}, KernelVariant, KernelConfig, TArgs)"/>),
/// the PTX catalog (<see cref="KernelCatalog"/>) and the static check all follow from it. Every
/// kernel takes one argument struct <typeparamref name="TArgs"/>, so one delegate type serves all.
/// </summary>
/// <typeparam name="TArgs">the kernel's argument struct</typeparam>
public sealed class KernelDefinition<TArgs> : IKernelDefinition
    where TArgs : struct
{
    readonly MethodInfo definition;
    readonly Func<KernelTuning, LaunchShape> gpuLaunch;

    KernelDefinition(string name, string family, MethodInfo prototype, KernelGrouping grouping, IReadOnlyList<WeightFormat>? formats, bool perBatchWidth,
        Func<KernelTuning, LaunchShape>? gpuLaunch)
    {
        Name = name;
        Family = family;
        Grouping = grouping;
        Formats = formats;
        PerBatchWidth = perBatchWidth;
        definition = prototype.IsGenericMethod ? prototype.GetGenericMethodDefinition() : prototype;
        int expected = (formats is null ? 0 : 1) + (perBatchWidth ? 1 : 0);
        int actual = definition.IsGenericMethodDefinition ? definition.GetGenericArguments().Length : 0;
        if (actual != expected)
            throw new InvalidOperationException($"kernel {name}: {definition.Name} has {actual} type parameters but the declaration binds {expected}");
        this.gpuLaunch = gpuLaunch ?? (_ => LaunchShape.Auto);
        Variants = (formats ?? [null!]).SelectMany(f => perBatchWidth
                ? Enumerable.Range(1, BatchWidth.Max).Select(b => new KernelVariant(f, b))
                : [new KernelVariant(f, 0)])
            .ToArray();
    }

    /// <summary>An explicitly grouped kernel (grid and group chosen by its launcher).</summary>
    /// <param name="prototype">the kernel method, any one instantiation if it is generic</param>
    /// <param name="formats">weight formats it is specialised for (its first type parameter), or null</param>
    /// <param name="perBatchWidth">specialised per decode batch width (its last type parameter)</param>
    public static KernelDefinition<TArgs> Explicit(string name, string family, Action<TArgs> prototype, Func<KernelTuning, LaunchShape> gpuLaunch,
        IReadOnlyList<WeightFormat>? formats = null, bool perBatchWidth = false) =>
        new(name, family, prototype.Method, KernelGrouping.Explicit, formats, perBatchWidth, gpuLaunch);

    /// <summary>An implicitly grouped kernel: one thread per index.</summary>
    public static KernelDefinition<TArgs> Implicit(string name, string family, Action<Index1D, TArgs> prototype, IReadOnlyList<WeightFormat>? formats = null) =>
        new(name, family, prototype.Method, KernelGrouping.Implicit, formats, false, null);

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public string Family { get; }

    /// <inheritdoc/>
    public KernelGrouping Grouping { get; }

    /// <summary>Weight formats the kernel is specialised for, or null when it reads no weights.</summary>
    public IReadOnlyList<WeightFormat>? Formats { get; }

    /// <summary>Whether the kernel is specialised per decode batch width.</summary>
    public bool PerBatchWidth { get; }

    /// <inheritdoc/>
    public IReadOnlyList<KernelVariant> Variants { get; }

    /// <summary>The variant for a format and batch width, checked against the declaration.</summary>
    public KernelVariant Variant(WeightFormat? format = null, int batch = 0)
    {
        if ((Formats is null) != (format is null) || (format is not null && !Formats!.Contains(format)))
            throw new ArgumentException($"{Name}: no specialisation for weight format {format?.Name ?? "(none)"}; it is compiled for {(Formats is null ? "no weight format" : string.Join(", ", Formats.Select(f => f.Name)))}");
        if (PerBatchWidth != batch > 0 || batch > BatchWidth.Max)
            throw new ArgumentException($"{Name}: batch {batch} must be between 1 and {BatchWidth.Max} for the decode kernels");
        return new KernelVariant(format, batch);
    }

    /// <inheritdoc/>
    public MethodInfo Method(KernelVariant variant)
    {
        if (!definition.IsGenericMethodDefinition)
            return definition;
        var types = new List<Type>();
        if (variant.Format is { } f)
            types.Add(f.DeviceType);
        if (variant.Batch > 0)
            types.Add(BatchWidth.TypeOf(variant.Batch));
        return definition.MakeGenericMethod([.. types]);
    }

    /// <inheritdoc/>
    public IEnumerable<KernelEntry> Entries => Variants.Select(v =>
        new KernelEntry(Name + v.Suffix, Family, Method(v), Grouping == KernelGrouping.Explicit, gpuLaunch(new KernelTuning())));

    /// <summary>
    /// Compiles the specialisation with <paramref name="accelerator"/>'s back end (IL for the CPU
    /// accelerator, PTX for CUDA) without loading it. Safe on several threads at once: this is
    /// ILGPU's <c>Backend.Compile</c>, whose IL-to-IR step holds the context's code-generation
    /// lock and whose transformations run on a private IR context (see
    /// <see cref="LlamaKernels.Precompile"/>); <c>Accelerator.LoadKernel(method)</c> would
    /// compile under the accelerator's lock, one kernel at a time.
    /// </summary>
    internal CompiledKernel Compile(Accelerator accelerator, KernelVariant variant)
    {
        var method = Method(variant);
        var entry = Grouping == KernelGrouping.Explicit
            ? EntryPointDescription.FromExplicitlyGroupedKernel(method)
            : EntryPointDescription.FromImplicitlyGroupedKernel(method);
        return accelerator.GetBackend().Compile(entry, KernelSpecialization.Empty);
    }

    /// <summary>
    /// Loads a specialisation compiled by <see cref="Compile"/> onto <paramref name="accelerator"/>:
    /// a launcher taking (stream, config or extent, args). What <c>Accelerator.LoadKernel(method)</c>
    /// does after compiling; not thread-safe (it binds the accelerator to the calling thread and
    /// maps the argument types through the back end's unsynchronised cache), so the caller's thread only.
    /// </summary>
    internal Delegate Load(Accelerator accelerator, CompiledKernel compiled) => Grouping == KernelGrouping.Explicit
        ? accelerator.LoadKernel(compiled).CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, TArgs>>()
        : accelerator.LoadAutoGroupedKernel(compiled).CreateLauncherDelegate<Action<AcceleratorStream, Index1D, TArgs>>();
}

/// <summary>
/// One kernel family (one source file): its kernel declarations, so the catalog, <c>ilgpu-llama ptx</c>,
/// the static check and <c>bench kernels</c> all find a new kernel without a second list to update.
/// Subclasses are discovered by <see cref="KernelCatalog"/>. The family's benchmark cases and the
/// CPU references they validate against live in kernels/IlgpuLlama.Kernels.Bench, which this
/// library (and the IlgpuLlama package) does not contain.
/// </summary>
public abstract class KernelFamily
{
    /// <summary>Family name (as in <see cref="IKernelDefinition.Family"/>).</summary>
    public abstract string Name { get; }

    /// <summary>The family's kernel declarations.</summary>
    public abstract IReadOnlyList<IKernelDefinition> Kernels { get; }
}
