namespace IlgpuLlama.Kernels.Bench;

/// <summary>
/// The validated benchmark cases of one kernel family (a <see cref="KernelFamily"/> of
/// <see cref="KernelCatalog"/>), one file per family in this project. Subclasses are discovered by
/// <see cref="BenchCatalog"/>, so a family's cases need no second list either.
/// </summary>
public abstract class FamilyBenchCases
{
    /// <summary>The family these cases time (as in <see cref="KernelFamily.Name"/>).</summary>
    public abstract string Family { get; }

    /// <summary>Validated benchmark cases at <paramref name="shapes"/> with weights in <paramref name="format"/>.</summary>
    public abstract IEnumerable<BenchCase> BenchCases(BenchShapes shapes, SixteenBitFormat format);

    /// <summary>
    /// Validated benchmark cases with matrices in the block format <paramref name="format"/>: the
    /// families whose kernels read quantised weights override this (the others have no such variant).
    /// </summary>
    public virtual IEnumerable<BenchCase> BlockBenchCases(BenchShapes shapes, BlockQuantFormat format) => [];
}

/// <summary>
/// The benchmark cases of every kernel family, found by reflection over this assembly (each family
/// of <see cref="KernelCatalog.Families"/> has one <see cref="FamilyBenchCases"/>): what
/// <c>bench kernels</c> times and the bench-driven tests run.
/// </summary>
public static class BenchCatalog
{
    /// <summary>Every family's cases, ordered by family name.</summary>
    public static IReadOnlyList<FamilyBenchCases> Families { get; } = typeof(FamilyBenchCases).Assembly.GetTypes()
        .Where(t => t.IsSubclassOf(typeof(FamilyBenchCases)) && !t.IsAbstract)
        .Select(t => (FamilyBenchCases)Activator.CreateInstance(t, nonPublic: true)!)
        .OrderBy(f => f.Family, StringComparer.Ordinal)
        .ToArray();

    /// <summary>The cases of <paramref name="family"/>; a family without exactly one set of cases is an error naming it.</summary>
    public static FamilyBenchCases For(KernelFamily family)
    {
        var found = Families.Where(f => f.Family == family.Name).ToArray();
        return found.Length == 1
            ? found[0]
            : throw new InvalidOperationException($"kernel family {family.Name} has {found.Length} sets of bench cases; it needs exactly one {nameof(FamilyBenchCases)} in kernels/IlgpuLlama.Kernels.Bench");
    }

    /// <summary>The benchmark cases of every family of <see cref="KernelCatalog"/> at <paramref name="shapes"/> with weights in <paramref name="format"/>.</summary>
    public static IReadOnlyList<BenchCase> Cases(BenchShapes shapes, WeightFormat format) =>
        KernelCatalog.Families.Select(For)
            .SelectMany(f => format is BlockQuantFormat q ? f.BlockBenchCases(shapes, q) : f.BenchCases(shapes, (SixteenBitFormat)format))
            .ToArray();
}
