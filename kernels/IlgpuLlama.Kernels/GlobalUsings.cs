global using ILGPU;
global using ILGPU.Algorithms;
global using ILGPU.Runtime;
global using Half = ILGPU.Half;
