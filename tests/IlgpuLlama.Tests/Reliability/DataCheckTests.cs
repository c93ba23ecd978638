using System.Text.Json;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Bad data is caught at load, with one line, for every command that loads it: NaN/Inf weights,
/// weights that overflow the device format, logits that come out NaN, a tokenizer that does not fit
/// vocab_size; and a temperature so small that 1 / T overflows still samples (greedily) instead of
/// producing a NaN normaliser.
/// </summary>
public sealed class DataCheckTests : IDisposable
{
    readonly string _dir = CliHarness.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A copy of the golden model with every 16-bit value of <paramref name="tensor"/> set to <paramref name="bits"/>.</summary>
    string GoldenWith(string tensor, ushort bits)
    {
        string model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        foreach (string f in Directory.GetFiles(GoldenFixture.Directory, "*.json").Append(Path.Combine(GoldenFixture.Directory, "model.safetensors")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        string path = Path.Combine(model, "model.safetensors");
        long offset, length;
        using (var file = SafetensorsFile.Open(path))
        {
            var t = file.Tensors[tensor];
            Assert.Equal(SafetensorsDType.BF16, t.DType);
            (offset, length) = (t.FileOffset, t.ByteLength);
        }
        using (var s = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            s.Position = offset;
            for (long i = 0; i < length; i += 2)
                s.Write(BitConverter.GetBytes(bits));
        }
        return model;
    }

    static string OneErrorLine(CliHarness.Result r)
    {
        Assert.True(r.ExitCode == 1, $"exit {r.ExitCode}\n{r.Err}");
        string line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.DoesNotContain("   at ", r.Err);
        return line;
    }

    [Theory]
    [InlineData("logits")]
    [InlineData("generate")]
    [InlineData("memory")]
    public void A_nan_weight_is_refused_at_load_by_every_command(string command)
    {
        string model = GoldenWith("model.layers.1.mlp.down_proj.weight", 0x7FC0);
        string npy = Path.Combine(_dir, "x.npy");
        string[] args = command switch
        {
            "logits" => ["logits", "--model", model, "--tokens", "1,2", "--out", npy, "--device", "cpu"],
            "generate" => ["generate", "--model", model, "--tokens", "1,2", "--max-new-tokens", "2", "--device", "cpu"],
            _ => ["memory", "--model", model, "--allocate", "--device", "cpu", "--batch", "1", "--seq", "16"],
        };
        string line = OneErrorLine(CliHarness.Run(args));
        Assert.Contains("'model.layers.1.mlp.down_proj.weight' holds a NaN or infinite value", line);
        Assert.False(File.Exists(npy));
        Assert.Equal("", CliHarness.Run(args).Out);
    }

    [Fact]
    public void Weights_that_overflow_fp16_are_refused_with_the_fix()
    {
        string model = GoldenWith("model.norm.weight", 0x4974); // 999424 in bfloat16
        string line = OneErrorLine(CliHarness.Run("logits", "--model", model, "--tokens", "1,2", "--out", Path.Combine(_dir, "x.npy"), "--device", "cpu"));
        Assert.Contains("exceed the fp16 range", line);
        Assert.Contains("--dtype bf16", line);
    }

    [Fact]
    public void Logits_refuses_to_write_nan_logits()
    {
        // The largest bfloat16 as the final norm's scale: the normalised state overflows to inf, the
        // LM head turns inf - inf into NaN. Finite weights, so only the logits check can stop it.
        string model = GoldenWith("model.norm.weight", 0x7F7F);
        string npy = Path.Combine(_dir, "x.npy");
        string line = OneErrorLine(CliHarness.Run("logits", "--model", model, "--tokens", "1,17,300", "--out", npy, "--dtype", "bf16", "--device", "cpu"));
        Assert.Contains("the logits hold NaN or infinite values", line);
        Assert.Contains("nothing was written", line);
        Assert.False(File.Exists(npy));
        Assert.DoesNotContain(Directory.GetFiles(_dir), f => f.Contains(".tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void A_temperature_whose_inverse_overflows_samples_greedily()
    {
        var c = GoldenFixture.Cases[1];
        string tokens = string.Join(",", c.Prompt);
        string[] Args(string t) => ["generate", "--model", GoldenFixture.Directory, "--tokens", tokens, "--temperature", t, "--seed", "3",
            "--max-new-tokens", "6", "--ignore-eos", "--max-seq-len", "64", "--device", "cpu", "--json"];
        var greedy = CliHarness.Run(Args("0"));
        var tiny = CliHarness.Run(Args("1e-45"));
        Assert.True(tiny.ExitCode == 0, tiny.Err);
        Assert.Equal(Generated(greedy.Out), Generated(tiny.Out));
    }

    static int[] Generated(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("sequences")[0].GetProperty("generated_tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(+1)]
    public void A_tokenizer_that_does_not_fit_vocab_size_is_refused_at_load(int delta)
    {
        // A rank file whose vocabulary (ranks + the 256 Llama 3 specials) is vocab_size + delta.
        string model = GoldenWith("model.norm.weight", 0x3F80); // 1.0: an ordinary model
        int ranks = 512 + delta - Llama3Vocabulary.SpecialTokenCount;
        if (ranks < 256)
        {
            // Fewer than 256 ranks cannot hold the bytes: keep 256 and raise vocab_size instead.
            var config = File.ReadAllText(Path.Combine(model, "config.json"));
            ranks = 256;
            int vocab = ranks + Llama3Vocabulary.SpecialTokenCount - delta;
            File.WriteAllText(Path.Combine(model, "config.json"), System.Text.RegularExpressions.Regex.Replace(config, "\"vocab_size\"\\s*:\\s*\\d+", $"\"vocab_size\": {vocab}"));
        }
        TiktokenModelWriter.Write(Path.Combine(model, "tokenizer.model"), Enumerable.Range(0, ranks).Select(i => i < 256 ? new[] { (byte)i } : new[] { (byte)'a', (byte)(i - 256), (byte)'z' }).ToList());
        foreach (string[] args in new[]
                 {
                     new[] { "generate", "--model", model, "--prompt", "hello", "--max-new-tokens", "2", "--device", "cpu" },
                     new[] { "tokenize", "--model", model, "--text", "hello" },
                     new[] { "chat", "--model", model, "--device", "cpu" },
                 })
        {
            var r = CliHarness.Run(args);
            string line = OneErrorLine(r);
            Assert.Contains("config.json says vocab_size", line);
            Assert.Equal("", r.Out);
        }
    }
}
