using System.Text;
using IlgpuLlama.IO;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>Bad inputs for the sweep: model directories, files and links that are wrong in one way each.</summary>
public sealed class SweepFixture : IDisposable
{
    public SweepFixture()
    {
        string g = GoldenFixture.Directory;
        string Dir(string name) => Directory.CreateDirectory(System.IO.Path.Combine(Path, name)).FullName;
        File.Copy(System.IO.Path.Combine(g, "model.safetensors"), System.IO.Path.Combine(Dir("nocfg"), "model.safetensors"));
        File.WriteAllText(System.IO.Path.Combine(Dir("emptycfg"), "config.json"), "");
        File.WriteAllText(System.IO.Path.Combine(Dir("arraycfg"), "config.json"), "[1, 2]");
        File.WriteAllText(System.IO.Path.Combine(Dir("negvocab"), "config.json"),
            System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(System.IO.Path.Combine(g, "config.json")), "\"vocab_size\"\\s*:\\s*\\d+", "\"vocab_size\": -5"));
        Directory.CreateDirectory(System.IO.Path.Combine(Dir("cfgdir"), "config.json"));
        foreach (string name in new[] { "zerost", "hugehdr", "badtok", "badjson" })
            File.Copy(System.IO.Path.Combine(g, "config.json"), System.IO.Path.Combine(Dir(name), "config.json"));
        File.WriteAllBytes(System.IO.Path.Combine(Path, "zerost", "model.safetensors"), []);
        File.WriteAllBytes(System.IO.Path.Combine(Path, "hugehdr", "model.safetensors"), [.. BitConverter.GetBytes(1UL << 62), .. "{}"u8]);
        File.WriteAllText(System.IO.Path.Combine(Path, "badtok", "tokenizer.model"), "not base64 !!! 0\n");
        File.WriteAllText(System.IO.Path.Combine(Path, "badjson", "tokenizer.json"), "{bad");
        File.CreateSymbolicLink(System.IO.Path.Combine(Path, "loop1"), "loop2");
        File.CreateSymbolicLink(System.IO.Path.Combine(Path, "loop2"), "loop1");
        File.WriteAllText(System.IO.Path.Combine(Path, "file.txt"), "hi\n");
        NpyFile.Write(System.IO.Path.Combine(Path, "a23.npy"), new float[6], [2, 3]);
        NpyFile.Write(System.IO.Path.Combine(Path, "a32.npy"), new float[6], [3, 2]);
        NpyFile.Write(System.IO.Path.Combine(Path, "a1d.npy"), new float[6], [6]);
        NpyFile.Write(System.IO.Path.Combine(Path, "zero.npy"), [], [0, 5]);
        Raw("huge.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }\n", 8, 1);
        Raw("v3bad.npy", "{'descr': '<f4', \u00ff 'shape': (2, 3), }\n", 24, 3, latin1: true);

        // Issue 17: FIFOs where files are read (they blocked forever), added token ids outside the
        // vocabulary, and a config with far more layers than its weights.
        if (OperatingSystem.IsLinux())
        {
            MkFifo(System.IO.Path.Combine(Path, "fifo"));
            MkFifo(System.IO.Path.Combine(Path, "fifo.npy"));
            MkFifo(System.IO.Path.Combine(Dir("fifocfg"), "config.json"));
            File.Copy(System.IO.Path.Combine(g, "config.json"), System.IO.Path.Combine(Dir("fifost"), "config.json"));
            MkFifo(System.IO.Path.Combine(Path, "fifost", "model.safetensors"));
            File.Copy(System.IO.Path.Combine(g, "config.json"), System.IO.Path.Combine(Dir("fifotok"), "config.json"));
            MkFifo(System.IO.Path.Combine(Path, "fifotok", "tokenizer.model"));
        }
        string demo = Dir("demo");
        Engine.DemoModel.Write(demo);
        foreach (var (name, id) in new[] { ("bigid", "2147483647"), ("negid", "-3"), ("hugeid", "99999999999"), ("edgeid", "768"), ("strid", "\"7\"") })
        {
            string d = Dir(name);
            File.Copy(System.IO.Path.Combine(demo, "config.json"), System.IO.Path.Combine(d, "config.json"));
            File.Copy(System.IO.Path.Combine(demo, "tokenizer.model"), System.IO.Path.Combine(d, "tokenizer.model"));
            File.WriteAllText(System.IO.Path.Combine(d, "tokenizer.json"), $"{{\"added_tokens\": [{{\"id\": {id}, \"content\": \"<x>\", \"special\": true}}]}}");
        }
        if (OperatingSystem.IsLinux())
        {
            string d = Dir("fifojson");
            File.Copy(System.IO.Path.Combine(demo, "config.json"), System.IO.Path.Combine(d, "config.json"));
            File.Copy(System.IO.Path.Combine(demo, "tokenizer.model"), System.IO.Path.Combine(d, "tokenizer.model"));
            MkFifo(System.IO.Path.Combine(d, "tokenizer.json"));
        }
        File.Copy(System.IO.Path.Combine(g, "model.safetensors"), System.IO.Path.Combine(Dir("million"), "model.safetensors"));
        File.WriteAllText(System.IO.Path.Combine(Path, "million", "config.json"),
            System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(System.IO.Path.Combine(g, "config.json")), "\"num_hidden_layers\"\\s*:\\s*\\d+", "\"num_hidden_layers\": 1000000"));
    }

    /// <summary>Makes a named pipe (nothing ever writes to it: opening it to read would wait forever).</summary>
    internal static void MkFifo(string path)
    {
        using var p = System.Diagnostics.Process.Start("mkfifo", [path])!;
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"mkfifo {path} failed");
    }

    void Raw(string name, string header, int dataBytes, byte major, bool latin1 = false)
    {
        byte[] h = latin1 ? Encoding.Latin1.GetBytes(header) : Encoding.ASCII.GetBytes(header);
        var bytes = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 };
        bytes.AddRange(major == 1 ? BitConverter.GetBytes((ushort)h.Length) : BitConverter.GetBytes((uint)h.Length));
        bytes.AddRange(h);
        bytes.AddRange(new byte[dataBytes]);
        File.WriteAllBytes(System.IO.Path.Combine(Path, name), bytes.ToArray());
    }

    public string Path { get; } = CliHarness.TempDir();

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>
/// The reliability sweep (docs/reliability.md): bad inputs found by trying the CLI as a new user
/// would, each run through the real command. Each gives a non-zero exit, exactly one line
/// <c>error: ...</c> saying what is wrong (checked by a fragment), no stack trace, nothing on stdout,
/// and leaves no file behind.
/// </summary>
public sealed class SweepTests(SweepFixture fixture) : IClassFixture<SweepFixture>
{
    /// <summary>(id, command line with {G} = golden model and {S} = the fixture folder, exit code, fragment of the error line).</summary>
    public static TheoryData<string, string, int, string> Cases() => new()
    {
        { "S01", "generate --model {G} --tokens '' --device cpu", 1, "is not a comma-separated list of token ids" },
        { "S02", "generate --model {G} --tokens -5 --device cpu", 1, "token id -5 is outside the vocabulary" },
        { "S03", "generate --model {G} --tokens 999999 --device cpu", 1, "token id 999999 is outside the vocabulary" },
        { "S04", "generate --model {G} --tokens 99999999999 --device cpu", 1, "has a number out of range" },
        { "S05", "generate --model {G} --tokens '1 2 3' --device cpu", 1, "is not a comma-separated list" },
        { "S06", "generate --model {G} --tokens 1 --prompt hi --device cpu", 2, "not both" },
        { "S07", "generate --model {G} --tokens 1 --top-p 0 --device cpu", 1, "--top-p must be in (0, 1]" },
        { "S08", "generate --model {G} --tokens 1 --top-p 1.5 --device cpu", 1, "--top-p must be in (0, 1]" },
        { "S09", "generate --model {G} --tokens 1 --min-p 1 --device cpu", 1, "--min-p must be in [0, 1)" },
        { "S10", "generate --model {G} --tokens 1 --min-p -0.1 --device cpu", 1, "--min-p must be in [0, 1)" },
        { "S11", "generate --model {G} --tokens 1 --repetition-penalty 0 --device cpu", 1, "--repetition-penalty must be finite and > 0" },
        { "S12", "generate --model {G} --tokens 1 --temperature -0.5 --device cpu", 1, "--temperature must be finite and >= 0" },
        { "S13", "generate --model {G} --tokens 1 --seed -1 --device cpu", 2, "--seed '-1' is not a whole number from 0" },
        { "S14", "generate --model {G} --tokens 1 --device tpu", 2, "--device 'tpu' is not one of auto, cuda, cpu" },
        { "S15", "generate --model {G} --tokens 1 --dtype fp8 --device cpu", 2, "'fp8' not recognized" },
        { "S16", "generate --model {G} --tokens 1 --decode-variant bogus --device cpu", 2, "'bogus' not recognized" },
        { "S17", "generate --model {G} --tokens 1 --top-k -1 --device cpu", 2, "--top-k must be between 0 and" },
        { "S18", "generate --model {G} --tokens 1 --max-seq-len 4000 --device cpu", 1, "max_position_embeddings 2048" },
        { "S19", "generate --model {G} --tokens 1,2,3,4,5,6,7,8 --max-seq-len 8 --max-new-tokens 1 --device cpu", 1, "exceeds --max-seq-len 8" },
        { "S20", "generate --model {G} --tokens 1 --temperature 1,5 --device cpu", 2, "--temperature '1,5' is not a finite decimal number" },
        { "S21", "generate --model {G} --tokens 1 --temperature Infinity --device cpu", 2, "is not a finite decimal number" },
        { "S22", "logits --model {G} --tokens 1 --mode sideways --out {S}/x.npy", 2, "'sideways' not recognized" },
        { "S23", "logits --model {G} --tokens 1 --out '' --device cpu", 2, "--out '' is not a file path" },
        { "S24", "logits --model {S}/file.txt --tokens 1 --out {S}/x.npy --device cpu", 1, "is not a directory" },
        { "S25", "logits --model {S}/nocfg --tokens 1 --out {S}/x.npy --device cpu", 1, "no config.json" },
        { "S26", "logits --model {S}/emptycfg --tokens 1 --out {S}/x.npy --device cpu", 1, "config.json: not valid JSON" },
        { "S27", "logits --model {S}/arraycfg --tokens 1 --out {S}/x.npy --device cpu", 1, "the JSON root is Array" },
        { "S28", "logits --model {S}/negvocab --tokens 1 --out {S}/x.npy --device cpu", 1, "'vocab_size' must be positive, got -5" },
        { "S29", "logits --model {S}/cfgdir --tokens 1 --out {S}/x.npy --device cpu", 1, "config.json is a directory, not a file" },
        { "S30", "logits --model {S}/zerost --tokens 1 --out {S}/x.npy --device cpu", 1, "the file is only 0 bytes" },
        { "S31", "logits --model {S}/hugehdr --tokens 1 --out {S}/x.npy --device cpu", 1, "exceeds the 100 MB limit" },
        { "S32", "logits --model {S}/loop1 --tokens 1 --out {S}/x.npy --device cpu", 1, "is not a directory" },
        { "S33", "logits --model {G} --tokens 1 --out {S}/loop1 --device cpu", 1, "a symbolic link that cannot be followed" },
        { "S34", "logits --model {G} --tokens 1 --out {S}/file.txt/x.npy --device cpu", 1, "does not exist; create it first" },
        { "S35", "compare-logits --ours {S}/a23.npy --reference {S}/a32.npy", 1, "shapes differ" },
        { "S36", "compare-logits --ours {S}/a1d.npy --reference {S}/a1d.npy", 1, "not 2-D" },
        { "S37", "compare-logits --ours {S}/zero.npy --reference {S}/zero.npy", 1, "the logits are empty" },
        { "S38", "compare-logits --ours {S}/huge.npy --reference {S}/a23.npy", 1, "is too large to read" },
        { "S39", "compare-logits --ours {S}/v3bad.npy --reference {S}/a23.npy", 1, "the header is not valid UTF-8" },
        { "S40", "compare-logits --ours {S}/a23.npy --reference {S}/a23.npy --tolerance 0", 2, "--tolerance must be greater than 0" },
        { "S41", "compare-logits --ours {S}/a23.npy --reference {S}/a23.npy", 1, "the reference has no spread" },
        { "S42", "compare-logits --ours {S}/a23.npy", 2, "Option '--reference' is required" },
        { "S43", "tokenize --model {G} --text hi", 1, "No tokenizer in" },
        { "S44", "tokenize --model {S}/badtok --text hi", 1, "Not a tiktoken rank file" },
        { "S45", "tokenize --model {S}/badjson --text hi", 1, "Cannot load tokenizer" },
        { "S46", "tokenize --model {S}/badtok --file /nonexistent-ilgpu-llama", 1, "does not exist" },
        { "S47", "tokenize --model {S}/badtok --file {S}", 1, "is a directory" },
        { "S48", "detokenize --model {S}/badtok --ids abc", 1, "'abc' is not a token id" },
        { "S49", "chat --model {G} --date 2024-13-45 --device cpu", 1, "is not yyyy-MM-dd" },
        { "S50", "chat --model {G} --date yesterday --device cpu", 1, "is not yyyy-MM-dd" },
        { "S51", "bench kernels --shapes huge", 2, "'huge' not recognized" },
        { "S52", "bench kernels --dtype q9", 2, "'q9' not recognized" },
        { "S53", "bench e2e --model llama-3.2-1b --prompt-tokens abc --device cpu", 1, "must be a comma-separated list of positive token counts" },
        { "S54", "bench e2e --model llama-3.2-1b --prompt-tokens 0 --device cpu", 1, "positive token counts" },
        { "S55", "bench e2e --model llama-3.2-1b --gen-tokens 1,x --device cpu", 1, "positive token counts" },
        { "S56", "bench e2e --model llama-3.2-1b --prompt-tokens '' --device cpu", 1, "is empty" },
        { "S57", "bench roofline --from /nonexistent-ilgpu-llama --out {S}/r.png", 1, "does not exist" },
        { "S58", "bench roofline --from {S} --out {S}/r.png", 1, "is a directory" },
        { "S59", "bench roofline --from {S}/a23.npy --out {S}/r.png", 1, "is not a bench kernels --json report" },
        { "S60", "ptx --arch sm_99 --out {S}/p", 2, "'sm_99' not recognized" },
        { "S61", "ptx --isa abc --out {S}/p", 1, "is not of the form MAJOR.MINOR" },
        { "S62", "ptx --out /dev/null", 1, "is a file; give a directory" },
        { "S63", "ptx --out /proc/ilgpu-llama-ptx", 1, "cannot create the directory" },
        { "S64", "memory --model llama-3.2-1b --seq 10000000", 1, "exceeds the model's max_position_embeddings" },
        { "S65", "memory --model llama-3.2-1b --dtype bogus", 2, "'bogus' not recognized" },
        { "S66", "memory --model {S}/emptycfg", 1, "not valid JSON" },
        { "S67", "memory --model {S}/file.txt", 1, "is a file; give the model's directory" },
        { "S68", "generat --model x", 2, "Unrecognized command or argument 'generat'" },
        { "S69", "generate --model {G} --tokens 1 --device cpu --bogus", 2, "Unrecognized command or argument '--bogus'" },
        { "S70", "info --json extra", 2, "Unrecognized command or argument 'extra'" },
        { "S71", "bench roofline --from {S}/a23.npy --out /dev/null", 1, "is not a regular file" },
        { "S72", "memory --model llama-3.2-1b --batch 99999999999", 2, "--batch must be between 1 and" },
        { "S73", "logits --model {S}/fifocfg --tokens 1 --out {S}/x.npy --device cpu", 1, "config.json is a FIFO, not a regular file" },
        { "S74", "logits --model {S}/fifost --tokens 1 --out {S}/x.npy --device cpu", 1, "model.safetensors is a FIFO, not a regular file" },
        { "S75", "tokenize --model {S}/fifotok --text hi", 1, "tokenizer.model is a FIFO, not a regular file" },
        { "S76", "tokenize --model {S}/fifojson --text hi", 1, "tokenizer.json is a FIFO, not a regular file" },
        { "S77", "tokenize --model {S}/badtok --file {S}/fifo", 1, "fifo is a FIFO, not a regular file" },
        { "S78", "perplexity --model {G} --file {S}/fifo --device cpu", 1, "fifo is a FIFO, not a regular file" },
        { "S79", "generate --model {G} --prompt-file {S}/fifo --device cpu", 1, "fifo is a FIFO, not a regular file" },
        { "S80", "generate --model {S}/demo --prompts-file {S}/fifo --device cpu", 1, "fifo is a FIFO, not a regular file" },
        { "S81", "compare-logits --ours {S}/fifo.npy --reference {S}/a23.npy", 1, "fifo.npy is a FIFO, not a regular file" },
        { "S82", "compare-logits --ours {S}/a23.npy --reference {S}/fifo.npy", 1, "fifo.npy is a FIFO, not a regular file" },
        { "S83", "bench roofline --from {S}/fifo --out {S}/r.png", 1, "fifo is a FIFO, not a regular file" },
        { "S84", "quantize --model {S}/fifocfg --dtype q8_0 --out {S}/q", 1, "config.json is a FIFO, not a regular file" },
        { "S85", "quantize --model {S}/fifost --dtype q8_0 --out {S}/q", 1, "model.safetensors is a FIFO, not a regular file" },
        { "S86", "memory --model {S}/fifocfg", 1, "config.json is a FIFO, not a regular file" },
        { "S87", "generate --model {G} --tokens 1,,2 --device cpu", 1, "--tokens '1,,2' has an empty field (number 2 of 3)" },
        { "S88", "generate --model {G} --tokens 1,2, --device cpu", 1, "--tokens '1,2,' has an empty field (number 3 of 3)" },
        { "S89", "logits --model {G} --tokens ,1 --out {S}/x.npy --device cpu", 1, "has an empty field (number 1 of 2)" },
        { "S90", "tokenize --model {S}/bigid --text hi", 1, "tokenizer.json': added token '<x>' has id 2147483647, outside the model's vocabulary of 768 ids" },
        { "S91", "tokenize --model {S}/negid --text hi", 1, "added token '<x>' has id -3, outside the model's vocabulary of 768 ids" },
        { "S92", "tokenize --model {S}/hugeid --text hi", 1, "added token '<x>' has id 99999999999, outside the model's vocabulary of 768 ids" },
        { "S93", "tokenize --model {S}/edgeid --text hi", 1, "added token '<x>' has id 768, outside the model's vocabulary of 768 ids (0 to 767" },
        { "S94", "tokenize --model {S}/strid --text hi", 1, "added token '<x>' has id \"7\", not a whole number" },
        { "S95", "detokenize --model {S}/bigid --ids 1", 1, "has id 2147483647, outside the model's vocabulary" },
        { "S96", "logits --model {S}/million --tokens 1 --out {S}/x.npy --device cpu", 1, "num_hidden_layers 1,000,000 but the weights hold 2 layers" },
        { "S97", "quantize --model {S}/million --dtype q8_0 --out {S}/q", 1, "num_hidden_layers 1,000,000 but the weights hold 2 layers" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_bad_input_gives_one_clear_line_and_leaves_nothing_behind(string id, string commandLine, int exitCode, string fragment)
    {
        if (!OperatingSystem.IsLinux() && (commandLine.Contains("/dev/", StringComparison.Ordinal) || commandLine.Contains("fifo", StringComparison.Ordinal)))
            return;
        string[] args = Split(commandLine.Replace("{G}", GoldenFixture.Directory).Replace("{S}", fixture.Path));
        var before = Directory.GetFileSystemEntries(fixture.Path).ToHashSet();
        var r = CliHarness.Run(args);
        Assert.True(r.ExitCode == exitCode, $"{id}: exit {r.ExitCode}, expected {exitCode}\n{r.Err}");
        var errors = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        string line = Assert.Single(errors);
        Assert.Contains(fragment, line);
        Assert.True(line.Length <= 700, $"{id}: {line.Length} characters");
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("internal error", r.Err);
        Assert.DoesNotContain("Usage:", r.Err);
        if (!args[0].StartsWith("compare-logits", StringComparison.Ordinal))
            Assert.True(r.Out.Length == 0, $"{id}: stdout {r.Out}");
        Assert.Equal(before, Directory.GetFileSystemEntries(fixture.Path).ToHashSet());
    }

    /// <summary>Splits a command line on spaces, keeping '...' together ('' is an empty argument).</summary>
    static string[] Split(string line)
    {
        var args = new List<string>();
        var current = new StringBuilder();
        bool quoted = false, any = false;
        foreach (char c in line)
        {
            if (c == '\'')
            {
                quoted = !quoted;
                any = true;
            }
            else if (c == ' ' && !quoted)
            {
                if (any || current.Length > 0)
                    args.Add(current.ToString());
                current.Clear();
                any = false;
            }
            else
            {
                current.Append(c);
            }
        }
        if (any || current.Length > 0)
            args.Add(current.ToString());
        return [.. args];
    }
}
