using IlgpuLlama.Kernels;

namespace IlgpuLlama.Model;

/// <summary>
/// The device format of every weight matrix of a model: one format for all (what <c>--dtype</c> asks
/// for), or a mix tensor by tensor, as a GGUF file of llama.cpp's K-quant mixes stores it (Q4_K_M:
/// Q4_K, with Q6_K for the output, half the attn_v and ffn_down). 1-D (norm) weights use the main
/// format's vector format. A format converts implicitly to the layout of that format alone.
/// </summary>
public sealed record WeightLayout
{
    readonly IReadOnlyDictionary<string, WeightFormat> perTensor;

    /// <summary>A layout: <paramref name="main"/> for every matrix not in <paramref name="perTensor"/>.</summary>
    public WeightLayout(WeightFormat main, IReadOnlyDictionary<string, WeightFormat>? perTensor = null)
    {
        Main = main ?? throw new ArgumentNullException(nameof(main));
        this.perTensor = perTensor?.Where(kv => kv.Value != main).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal)
            ?? new Dictionary<string, WeightFormat>(StringComparer.Ordinal);
        if (this.perTensor.Values.Any(f => f.VectorFormat != main.VectorFormat))
            throw new ArgumentException("every format of a layout must store 1-D weights the same way", nameof(perTensor));
    }

    /// <summary>The format of the matrices not listed otherwise (the most common one).</summary>
    public WeightFormat Main { get; }

    /// <summary>True when some matrix has another format than <see cref="Main"/>.</summary>
    public bool IsMixed => perTensor.Count > 0;

    /// <summary>The format of the matrix named <paramref name="tensor"/> (its engine name).</summary>
    public WeightFormat For(string tensor) => perTensor.TryGetValue(tensor, out var f) ? f : Main;

    /// <summary>Every format used, the main one first.</summary>
    public IReadOnlyList<WeightFormat> Formats => [Main, .. perTensor.Values.Distinct().OrderBy(f => f.Name, StringComparer.Ordinal)];

    /// <summary>The formats' names: "q4_k", or "q4_k+q6_k" for a mix.</summary>
    public string Name => string.Join("+", Formats.Select(f => f.Name));

    /// <summary>How many matrices of <paramref name="config"/> each format holds: "q4_k x 97, q6_k x 17".</summary>
    public string Describe(LlamaConfig config) => string.Join(", ", config.ExpectedTensors().Where(t => t.Shape.Length == 2)
        .GroupBy(t => For(t.Name)).OrderByDescending(g => g.Count()).Select(g => $"{g.Key.Name} x {g.Count()}"));

    /// <summary>Device bytes of every weight of <paramref name="config"/>: each matrix in its format, 1-D weights in the vector format.</summary>
    public long WeightBytes(LlamaConfig config) => config.ExpectedTensors().Sum(t => t.Shape.Length == 2
        ? For(t.Name).MatrixBytes(t.Shape[0], t.Shape[1])
        : Main.VectorBytes(t.Shape[0]));

    /// <summary>The layout of one format.</summary>
    public static implicit operator WeightLayout(WeightFormat format) => new(format);

    /// <inheritdoc/>
    public bool Equals(WeightLayout? other) =>
        other is not null && Main == other.Main && perTensor.Count == other.perTensor.Count && perTensor.All(kv => other.perTensor.TryGetValue(kv.Key, out var f) && f == kv.Value);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Main, perTensor.Count);

    /// <inheritdoc/>
    public override string ToString() => Name;
}
