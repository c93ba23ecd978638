using System.Text.RegularExpressions;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Bench;
using IlgpuLlama.Kernels.Reference;
using IlgpuLlama.Model;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Architecture;

/// <summary>
/// The structure the code relies on: kernel declarations and the catalog derived from them, the
/// buffer plan behind the memory formula, the engine's parameter-neutral messages, and the
/// layering rules (no test oracle or bench case in the library assemblies, no CLI flag in engine strings).
/// </summary>
public sealed class ArchitectureTests
{
    static string RepoRoot { get; } = Path.GetFullPath(Path.Combine(GoldenFixture.Directory, "..", "..", ".."));

    [Fact]
    public void The_catalog_lists_every_specialisation_of_every_declared_kernel_once()
    {
        var names = KernelCatalog.All.Select(e => e.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        // Derived, not counted: the catalog is exactly every variant of every declared kernel, and a
        // kernel specialised per format or per batch width has every format it can read (all formats,
        // or the 16-bit ones for norm weights) crossed with every width 1..BatchWidth.Max.
        var declared = KernelCatalog.Families.SelectMany(f => f.Kernels).ToList();
        Assert.Equal(declared.SelectMany(k => k.Variants.Select(v => k.Name + v.Suffix)).Order(), names.Order());
        foreach (var k in declared.Where(k => k.Variants.Any(v => v.Format is not null)))
        {
            var formats = k.Variants.Select(v => v.Format!).Distinct().ToList();
            Assert.True(formats.SequenceEqual(WeightFormat.All) || formats.SequenceEqual(WeightFormat.SixteenBit), $"{k.Name}: formats {string.Join(", ", formats)}");
            var widths = k.Variants.Select(v => v.Batch).Distinct().Order().ToList();
            Assert.True(widths.SequenceEqual([0]) || widths.SequenceEqual(Enumerable.Range(1, BatchWidth.Max)), $"{k.Name}: widths {string.Join(", ", widths)}");
            Assert.Equal(formats.Count * widths.Count, k.Variants.Count);
        }
        Assert.Contains("matvec_swiglu_norm_q4_0_b4", names);
        Assert.All(KernelCatalog.All, e => Assert.False(e.Method.ContainsGenericParameters, e.Name));
        Assert.Contains("matvec_qkv_rope_bf16_b3", names);
        Assert.Contains("attention", names);
        var families = KernelCatalog.Families.Select(f => f.Name).ToList();
        // Every family class the kernels assembly declares is in the catalog, once.
        var familyTypes = typeof(KernelFamily).Assembly.GetTypes().Where(t => t.IsSubclassOf(typeof(KernelFamily)) && !t.IsAbstract).ToList();
        Assert.Equal(familyTypes.Count, families.Count);
        Assert.Equal(families.Count, families.Distinct().Count());
        Assert.Equal(familyTypes.OrderBy(t => t.FullName), KernelCatalog.Families.Select(f => f.GetType()).OrderBy(t => t.FullName));
        Assert.All(KernelCatalog.Families, f => Assert.All(f.Kernels, k => Assert.Equal(f.Name, k.Family)));
    }

    [Fact]
    public void Every_family_has_bench_cases_and_every_case_names_a_cataloged_kernel()
    {
        // The bench project maps the catalog's families to their cases: exactly one set per family, none for a family the catalog lacks.
        var catalogFamilies = KernelCatalog.Families.Select(f => f.Name).ToList();
        Assert.Equal(catalogFamilies, BenchCatalog.Families.Select(b => b.Family));
        Assert.All(KernelCatalog.Families, f => Assert.Equal(f.Name, BenchCatalog.For(f).Family));
        Assert.All(KernelCatalog.Families, f => Assert.All(BenchCatalog.For(f).BenchCases(BenchShapes.Tiny, WeightFormat.Fp16), c => Assert.Equal(f.Name, c.Family)));
        var cases = BenchCatalog.Cases(BenchShapes.Tiny, WeightFormat.Bf16);
        Assert.All(KernelCatalog.Families, f => Assert.Contains(cases, c => c.Family == f.Name));
        var names = KernelCatalog.All.Select(e => e.Name).ToHashSet();
        Assert.All(cases, c => Assert.Contains(names, n => n == c.Kernel || n.StartsWith(c.Kernel + "_b", StringComparison.Ordinal)));
        Assert.All(cases, c => Assert.True(c.Bytes > 0, c.Kernel));
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Block_formats_bench_the_weight_reading_families_with_their_own_bytes(string dtype)
    {
        var f = (BlockQuantFormat)WeightFormat.Parse(dtype);
        var cases = BenchCatalog.Cases(BenchShapes.Llama32_1B, f);
        Assert.Equal(["decode_layer", "gemm", "matvec", "precise"], cases.Select(c => c.Family).Distinct().Order());
        var names = KernelCatalog.All.Select(e => e.Name).ToHashSet();
        Assert.All(cases, c => Assert.EndsWith("_" + dtype, c.Kernel));
        Assert.All(cases, c => Assert.Contains(names, n => n == c.Kernel || n.StartsWith(c.Kernel + "_b", StringComparison.Ordinal)));
        // The LM head at batch 1 moves its quants and scales (rows x in/32 x 34 or 18 B), the input and the output.
        var lmHead = Assert.Single(cases, c => c.Kernel == "matvec_" + dtype && c.Shape.EndsWith("lm head") && c.Batch == 1);
        Assert.Equal(128256L * (2048 / 32) * f.BytesPerBlock + 4 * 2048 + 4 * 128256, lmHead.Bytes);
        // The tiny shapes' odd intermediate size is rounded up to whole blocks.
        Assert.All(BenchCatalog.Cases(BenchShapes.Tiny, f), c => Assert.DoesNotContain("344", c.Shape));
    }

    [Fact]
    public void A_declaration_rejects_specialisations_it_does_not_have()
    {
        var matvec = MatVecKernels.MatVecKernel;
        Assert.Equal(new KernelVariant(WeightFormat.Bf16, 3), matvec.Variant(WeightFormat.Bf16, 3));
        Assert.Contains("batch 5", Assert.Throws<ArgumentException>(() => matvec.Variant(WeightFormat.Fp16, 5)).Message);
        Assert.Contains("weight format", Assert.Throws<ArgumentException>(() => matvec.Variant(null, 1)).Message);
        Assert.Throws<ArgumentException>(() => AttentionKernels.AttentionKernel.Variant(WeightFormat.Fp16));
    }

    [Fact]
    public void Weight_formats_are_data_the_memory_formula_reads()
    {
        // The registry, not a list here: a new format is one more entry of WeightFormat.All.
        Assert.Equal(WeightFormat.All.Select(f => f.Name), WeightFormat.Names);
        Assert.Same(WeightFormat.Fp16, WeightFormat.All[0]); // the default first
        Assert.All(WeightFormat.All, f => Assert.Same(f, WeightFormat.Parse(f.Name.ToUpperInvariant())));
        Assert.Same(WeightFormat.Bf16, WeightFormat.Parse("BF16"));
        Assert.Contains($"known formats: {string.Join(", ", WeightFormat.Names)}", Assert.Throws<ArgumentException>(() => WeightFormat.Parse("q5_1")).Message);
        var config = LlamaConfig.Preset("llama-3.2-1b");
        var shape = WorkspaceShape.For(config, 4, 256, new KernelTuning());
        foreach (var f in WeightFormat.SixteenBit)
            Assert.Equal(config.ParameterCount() * 2, new MemoryPlan(config, shape, f).WeightBytes);
        // The issue's figures: matrices at rows x in/32 x 34 (or 18) B, norms at 2 B.
        Assert.Equal(1_313_116_160, new MemoryPlan(config, shape, WeightFormat.Q8_0).WeightBytes);
        Assert.Equal(695_242_752, new MemoryPlan(config, shape, WeightFormat.Q4_0).WeightBytes);
        var eight = LlamaConfig.Preset("llama-3.1-8b");
        var eightShape = WorkspaceShape.For(eight, 4, 256, new KernelTuning());
        Assert.Equal(8_532_402_176, new MemoryPlan(eight, eightShape, WeightFormat.Q8_0).WeightBytes);
        Assert.Equal(4_517_404_672, new MemoryPlan(eight, eightShape, WeightFormat.Q4_0).WeightBytes);
        Assert.Equal(2 * 8 * 2048L, WeightFormat.Fp16.MatrixBytes(8, 2048));
        Assert.Equal(16.0, WeightFormat.Fp16.BitsPerWeight);
        // The shared rounding helper: round to nearest even, exact round trips.
        Assert.Equal((ushort)0x3C00, WeightFormat.Fp16.Encode(1.0));
        Assert.Equal((ushort)0x3F80, WeightFormat.Bf16.Encode(1.0));
        Assert.Equal(1.0, WeightFormat.Bf16.Decode(0x3F80));
        Assert.Equal((ushort)0x3F80, WeightFormat.Bf16.Encode(1.00390625)); // halfway between 0x3F80 and 0x3F81: ties to even
    }

    /// <summary>
    /// A weight format is one type: its record (name, layout, memory formula, host encoding) in
    /// Formats/, with its device struct nested, listed once in <see cref="WeightFormat.All"/>. No other
    /// code names a particular format or picks a path by chunk size, so a new format cannot silently
    /// take another format's path (issue 19).
    /// </summary>
    [Fact]
    public void A_weight_format_is_one_type_and_no_other_code_names_one()
    {
        var formatFiles = new HashSet<string>();
        foreach (var f in WeightFormat.All)
        {
            var type = f.GetType();
            Assert.Same(type, f.DeviceType.DeclaringType);
            Assert.True(typeof(IWeightFormat).IsAssignableFrom(f.DeviceType) && f.DeviceType.IsValueType, $"{type.Name}.Device must be a struct implementing IWeightFormat");
            string file = Path.Combine(RepoRoot, "kernels", "IlgpuLlama.Kernels", "Formats", type.Name + ".cs");
            Assert.True(File.Exists(file), $"{type.Name} belongs in Formats/{type.Name}.cs");
            formatFiles.Add(file);
        }
        // The 16-bit formats are what checkpoints hold (DTypeConversion converts into them; fp16 is the
        // default and the KV cache's format), so they may be named; a block format may not.
        var named = WeightFormat.All.OfType<BlockQuantFormat>().SelectMany(f => new[] { f.GetType().Name, "WeightFormat." + f.GetType().Name.Replace("Format", "") }).ToArray();
        var chunkTest = new Regex(@"ChunkWeights\s*[=!]=");
        var offenders = new List<string>();
        foreach (var root in new[] { "src", "kernels" })
        {
            foreach (var file in SourceFiles(root))
            {
                // The registry names every format; the K-quant mixes are data too (llama.cpp's rule, which names its formats).
                if (formatFiles.Contains(file) || Path.GetFileName(file) is "WeightFormat.cs" or "WeightMix.cs")
                    continue;
                var lines = File.ReadAllLines(file);
                for (int i = 0; i < lines.Length; i++)
                {
                    string code = lines[i].TrimStart();
                    if (code.StartsWith("//", StringComparison.Ordinal))
                        continue;
                    if (chunkTest.IsMatch(code) || named.Any(n => Regex.IsMatch(code, $@"\b{Regex.Escape(n)}\b")))
                        offenders.Add($"{Path.GetRelativePath(RepoRoot, file)}:{i + 1}: {code}");
                }
            }
        }
        Assert.True(offenders.Count == 0, "ask the format (its record or its Device struct) instead:\n" + string.Join("\n", offenders));
    }

    /// <summary>
    /// The engine's CPU accelerator runs groups of one lane (ComputeDevice.EngineCpuDevice): no shuffle
    /// and no waiting barrier, about 5x faster per decode step than warps of 2 and 10x under load. If
    /// ILGPU ever stops accepting a one-lane warp this fails rather than silently slowing every test.
    /// </summary>
    [Fact]
    public void The_engine_runs_the_cpu_accelerator_with_one_lane_groups()
    {
        var cpu = ComputeDevice.EngineCpuDevice;
        Assert.Equal(1, cpu.WarpSize);
        Assert.Equal(1, cpu.MaxNumThreadsPerGroup);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        Assert.Equal(1, device.Accelerator.WarpSize);
        Assert.Contains("warp 1, max group 1", device.Description);
        var tuning = KernelTuning.For(device.Accelerator);
        Assert.Equal(1, tuning.MatVecMaxGroup);
        Assert.Equal(1, tuning.AttentionGroup);
    }

    [Fact]
    public void The_kv_cache_offset_is_the_documented_formula()
    {
        var c = new KvCacheLayout(kvHeads: 3, maxSeq: 7, headDim: 16);
        for (int slot = 0; slot < 2; slot++)
            for (int head = 0; head < 3; head++)
                for (int pos = 0; pos < 7; pos += 3)
                    Assert.Equal(((slot * 3 + head) * 7 + pos) * 16 + 5, c.Offset(slot, head, pos, 5));
        Assert.Equal(3L * 7 * 16 * 4, c.Elements(4));
    }

    [Fact]
    public void The_buffer_plan_is_what_the_memory_formula_sums()
    {
        var config = LlamaConfig.Preset("llama-3.2-1b");
        var plan = new MemoryPlan(config, WorkspaceShape.For(config, 4, 256, new KernelTuning()), WeightFormat.Fp16);
        var buffers = plan.Workspace.Buffers;
        Assert.Equal(buffers.Count, buffers.Select(b => b.Name).Distinct().Count());
        Assert.Equal(plan.ActivationBytes, buffers.Where(b => b.Category == MemoryCategory.Activations).Sum(b => b.Bytes));
        Assert.Equal(plan.KvCacheBytes, buffers.Where(b => b.Category == MemoryCategory.KvCache).Sum(b => b.Bytes));
        Assert.Equal(107_873_104, plan.ActivationBytes); // README's worked example
        Assert.Contains(plan.ActivationLines, l => l.Item == "residual x, normed xb" && l.Formula == "2 x T x hidden x 4" && l.Bytes == 2L * 1024 * 2048 * 4);
    }

    [Fact]
    public void Prefill_chunks_cut_the_concatenated_prompts_and_mark_where_each_ends()
    {
        var sequences = new[] { new SequenceInput(2, 0, [1, 2, 3, 4, 5]), new SequenceInput(0, 7, [8, 9]), new SequenceInput(1, 0, [6]) };
        var chunks = PrefillChunk.Plan(sequences, 3);
        Assert.Equal([3, 3, 2], chunks.Select(c => c.Count));
        Assert.Equal([1, 2, 3], chunks[0].Tokens);
        Assert.Empty(chunks[0].Ends);
        Assert.Equal([4, 5, 8], chunks[1].Tokens);
        Assert.Equal([2, 2, 0], chunks[1].Slots);
        Assert.Equal([3, 4, 7], chunks[1].Positions);
        Assert.Equal([(0, 1)], chunks[1].Ends);
        Assert.Equal([(1, 0), (2, 1)], chunks[2].Ends);
        Assert.Equal([1, 2], chunks[2].Sequences);
    }

    [Fact]
    public void Engine_messages_name_parameters_the_way_each_caller_sets_them()
    {
        var e = new EngineArgumentException($"{EngineParameters.MaxSeqLen} 0 must be at least 1; or raise {EngineParameters.MaxBatchSize}", EngineParameter.MaxSeqLen);
        Assert.Equal("MaxSeqLen 0 must be at least 1; or raise MaxBatchSize", e.Message);
        Assert.Equal("--max-seq-len 0 must be at least 1; or raise --max-batch-size", CliNames.Message(e));
        Assert.Equal(EngineParameter.MaxSeqLen, e.Parameter);
        var shapeError = Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(LlamaConfig.Preset("llama-3.2-1b"), 65, 256, new KernelTuning()));
        Assert.Equal(EngineParameter.MaxBatchSize, shapeError.Parameter);
        Assert.StartsWith("--max-batch-size 65 must be between 1 and 64", CliNames.Message(shapeError));
        Assert.Equal("{Unknown} stays", EngineParameters.Render("{Unknown} stays", CliNames.Flag));
        Assert.All(Enum.GetValues<EngineParameter>(), p => Assert.StartsWith("--", CliNames.Flag(p)));
    }

    /// <summary>
    /// The test oracle and the bench cases live in their own assembly, which the library assemblies
    /// (the engine and the kernels it ships in its package) neither contain nor reference: every
    /// namespace of that assembly is a Reference or Bench one, and no library type is in such a namespace.
    /// </summary>
    [Fact]
    public void The_library_assemblies_hold_no_test_oracle_or_bench_case()
    {
        static bool OracleOrBench(string? ns) => (ns ?? "").Split('.').Any(part => part is "Reference" or "Bench");
        var bench = typeof(BenchCatalog).Assembly;
        Assert.Same(bench, typeof(KernelReference).Assembly);
        var benchNamespaces = bench.GetTypes().Where(t => t.IsPublic).Select(t => t.Namespace).Distinct().ToList();
        Assert.All(benchNamespaces, ns => Assert.True(OracleOrBench(ns), $"{ns} in {bench.GetName().Name} is neither a Reference nor a Bench namespace"));
        var libraries = new[] { typeof(LlamaEngine).Assembly, typeof(KernelCatalog).Assembly };
        Assert.Contains(libraries[1].GetName().Name, libraries[0].GetReferencedAssemblies().Select(a => a.Name));
        foreach (var library in libraries)
        {
            Assert.NotSame(bench, library);
            var offenders = library.GetTypes().Where(t => OracleOrBench(t.Namespace) || benchNamespaces.Contains(t.Namespace)).Select(t => t.FullName).ToList();
            Assert.True(offenders.Count == 0, $"{library.GetName().Name} holds test-oracle or bench types: {string.Join(", ", offenders)}");
            Assert.DoesNotContain(bench.GetName().Name, library.GetReferencedAssemblies().Select(a => a.Name));
        }
    }

    [Fact]
    public void The_static_check_sizes_attention_at_the_bench_llama_shapes()
    {
        var s = AttentionKernels.StaticCheckShape;
        var llama = BenchShapes.Llama32_1B;
        Assert.Equal((llama.Heads, llama.KvHeads, llama.HeadDim), (s.Heads, s.KvHeads, s.HeadDim));
    }

    static IEnumerable<string> SourceFiles(string relative) =>
        Directory.EnumerateFiles(Path.Combine(RepoRoot, relative), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal));

    [Fact]
    public void The_engine_uses_no_test_oracle_and_names_no_cli_flag()
    {
        var flagInString = new Regex("\"[^\"\\n]*--[a-z][a-z-]+[^\"\\n]*\"");
        foreach (var file in SourceFiles("src/IlgpuLlama"))
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal))
                    continue;
                Assert.False(code.Contains("KernelReference", StringComparison.Ordinal), $"{file}:{i + 1} uses the test oracle");
                Assert.False(flagInString.IsMatch(code), $"{file}:{i + 1} names a CLI flag in a string: {code}");
            }
        }
        foreach (var file in SourceFiles("src/IlgpuLlama/Device"))
            Assert.DoesNotContain("LlamaKernels", File.ReadAllText(file));
    }
    /// <summary>
    /// Every host-device copy goes through <see cref="HostCopy"/>, which pins the host memory for the
    /// whole copy. ILGPU's <c>ref T</c> overloads take an unpinned reference and allocate before
    /// copying, so a garbage collection in between moves the array under the copy (issue 17); the
    /// array and span overloads are routed through HostCopy too, so one rule covers every call.
    /// </summary>
    [Fact]
    public void Host_device_copies_go_through_HostCopy_which_pins_the_host_memory()
    {
        var direct = new Regex(@"\.Copy(From|To)CPU(UnsafeAsync)?\s*[<(]");
        var offenders = new List<string>();
        foreach (var root in new[] { "src", "kernels", "examples", "tests" })
        {
            foreach (var file in SourceFiles(root))
            {
                if (Path.GetFileName(file) == "HostCopy.cs")
                    continue;
                var lines = File.ReadAllLines(file);
                for (int i = 0; i < lines.Length; i++)
                {
                    string code = lines[i].TrimStart();
                    if (!code.StartsWith("//", StringComparison.Ordinal) && direct.IsMatch(code))
                        offenders.Add($"{Path.GetRelativePath(RepoRoot, file)}:{i + 1}: {code}");
                }
            }
        }
        Assert.True(offenders.Count == 0, "copy through HostCopy.Upload/Download instead:\n" + string.Join("\n", offenders));
        Assert.Contains("fixed (T* pinned", File.ReadAllText(Path.Combine(RepoRoot, "kernels", "IlgpuLlama.Kernels", "HostCopy.cs")));
    }
}
